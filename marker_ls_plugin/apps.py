"""Django app configuration: where the plugin joins Label Studio once Django has loaded every app."""

from django.apps import AppConfig


class MarkerLSPluginConfig(AppConfig):
    name = "marker_ls_plugin"
    label = "marker_ls_plugin"
    verbose_name = "Marker OCR"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: these import Label Studio's models, which exist only once apps are loaded.
        from marker_ls_plugin.ml import connector
        from marker_ls_plugin.web import admin  # noqa: F401  (registers the admin pages: Django looks in <app>.admin)
        from marker_ls_plugin.wiring import checks, signals  # noqa: F401  (registers checks and receivers)
        from marker_ls_plugin.wiring.actions import register_actions

        register_actions()
        connector.install()
