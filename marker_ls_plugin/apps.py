"""Django app configuration."""

from django.apps import AppConfig


class MarkerLSPluginConfig(AppConfig):
    name = "marker_ls_plugin"
    label = "marker_ls_plugin"
    verbose_name = "Marker OCR"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from marker_ls_plugin import checks  # noqa: F401  (registers the system checks)
