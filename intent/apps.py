from django.apps import AppConfig


class IntentConfig(AppConfig):
    name = "intent"
    verbose_name = "Intent detection"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
