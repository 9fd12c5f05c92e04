"""Routes under /marker-ls/."""

from pathlib import Path

from django.urls import path, re_path
from django.views.static import serve

from marker_ls_plugin.ml import views as ml_views
from marker_ls_plugin.web import api, pages

app_name = "marker_ls_plugin"

STATIC_ROOT = Path(__file__).parent.parent / "static" / "marker_ls_plugin"

urlpatterns = [
    path("", pages.dashboard, name="dashboard"),
    path("runs/<int:pk>/", pages.run_detail, name="run-detail"),
    path("runs/<int:pk>/cancel/", pages.run_cancel_page, name="run-cancel"),
    path("runs/<int:pk>/retry/", pages.run_retry_page, name="run-retry"),
    path("runs/<int:pk>/activate/", pages.run_activate_page, name="run-activate"),
    path("projects/<int:project_pk>/runs/start/", pages.run_start_page, name="run-start"),
    path("projects/<int:project_pk>/", pages.project_page, name="project"),
    path("projects/<int:project_pk>/engine/", pages.project_engine_page, name="project-engine"),
    path("api/projects/<int:project_pk>/runs/", api.ProjectRunsAPI.as_view(), name="api-project-runs"),
    path("api/projects/<int:project_pk>/ocr/", api.ProjectOCRAPI.as_view(), name="api-project-ocr"),
    path("api/runs/<int:pk>/", api.RunAPI.as_view(), name="api-run"),
    path("api/runs/<int:pk>/cancel/", api.RunCancelAPI.as_view(), name="api-run-cancel"),
    path("api/runs/<int:pk>/retry/", api.RunRetryAPI.as_view(), name="api-run-retry"),
    # Label Studio's ML backend protocol over HTTP, for callers outside this process (Basic auth).
    re_path(r"^ml/(?P<route>health|setup|predict|webhook|train)/?$", ml_views.endpoint, name="ml-protocol"),
    # Label Studio serves /static/ from its own build folder only; the plugin serves its files here.
    re_path(r"^static/(?P<path>.+)$", serve, {"document_root": str(STATIC_ROOT)}, name="static"),
    # The plugin owns /marker-ls/: nothing under it may fall through to Label Studio's unanchored
    # patterns (its r'health/' would answer /marker-ls/anything/health/).
    re_path(r"^", pages.not_found),
]
