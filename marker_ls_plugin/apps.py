"""Django app configuration."""

from django.apps import AppConfig


class MarkerLSPluginConfig(AppConfig):
    name = "marker_ls_plugin"
    label = "marker_ls_plugin"
    verbose_name = "Marker OCR"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from marker_ls_plugin import checks, connector, signals  # noqa: F401  (registers checks and receivers)
        from marker_ls_plugin.actions import register_actions

        register_actions()
        connector.install()
