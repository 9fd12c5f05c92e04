"""The plugin's routes, placed in front of Label Studio's own.

Label Studio's urlconf has unanchored patterns (``health/``, ``version/``, ``metrics/``) that match
anywhere in a path, so everything of ours must be resolved first.
"""

from core.urls import urlpatterns as label_studio_urlpatterns
from django.urls import include, path

from marker_ls_plugin.web.api import TemplateListWithPreset

urlpatterns = [
    path("marker-ls/", include("marker_ls_plugin.web.urls")),
    # Label Studio's template gallery, plus the plugin's OCR preset.
    path("api/templates/", TemplateListWithPreset.as_view(), name="marker-ls-templates"),
    *label_studio_urlpatterns,
]
