"""Routes under /marker-ls/."""

from pathlib import Path

from django.urls import path, re_path
from django.views.static import serve

from marker_ls_plugin.ml import views as ml_views
from marker_ls_plugin.web import views

app_name = "marker_ls_plugin"

STATIC_ROOT = Path(__file__).parent.parent / "static" / "marker_ls_plugin"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel_page, name="run-cancel"),
    path("runs/<int:pk>/retry/", views.run_retry_page, name="run-retry"),
    path("runs/<int:pk>/activate/", views.run_activate_page, name="run-activate"),
    path("projects/<int:project_pk>/runs/start/", views.run_start_page, name="run-start"),
    path("projects/<int:project_pk>/", views.project_page, name="project"),
    path("projects/<int:project_pk>/engine/", views.project_engine_page, name="project-engine"),
    path("api/projects/<int:project_pk>/runs/", views.ProjectRunsAPI.as_view(), name="api-project-runs"),
    path("api/projects/<int:project_pk>/ocr/", views.ProjectOCRAPI.as_view(), name="api-project-ocr"),
    path("api/runs/<int:pk>/", views.RunAPI.as_view(), name="api-run"),
    path("api/runs/<int:pk>/cancel/", views.RunCancelAPI.as_view(), name="api-run-cancel"),
    path("api/runs/<int:pk>/retry/", views.RunRetryAPI.as_view(), name="api-run-retry"),
    # Label Studio's ML backend protocol over HTTP, for callers outside this process (Basic auth).
    re_path(r"^ml/(?P<route>health|setup|predict|webhook|train)/?$", ml_views.endpoint, name="ml-protocol"),
    # Label Studio serves /static/ from its own build folder only; the plugin serves its files here.
    re_path(r"^static/(?P<path>.+)$", serve, {"document_root": str(STATIC_ROOT)}, name="static"),
    # The plugin owns /marker-ls/: nothing under it may fall through to Label Studio's unanchored
    # patterns (its r'health/' would answer /marker-ls/anything/health/).
    re_path(r"^", views.not_found),
]
