from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    verbose_name = "Detection analytics"

    def ready(self) -> None:
        from django.core import checks

        from .checks import mirror_columns_check

        checks.register(mirror_columns_check, checks.Tags.models)
