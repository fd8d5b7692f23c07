from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    verbose_name = "Detection analytics"

    def ready(self) -> None:
        from django.core import checks

        from .checks import mirror_columns_check, retention_check

        checks.register(mirror_columns_check, checks.Tags.models)
        checks.register(retention_check)
        # drf-spectacular imports each filter extension's target class on first use, and two threads generating the
        # schema at once (gunicorn's) race there when a target is missing (django-filter, not installed): one sets
        # it to None while the other reads it, a 500. Loading them here, in one thread, settles them first.
        from drf_spectacular.extensions import OpenApiFilterExtension

        OpenApiFilterExtension.get_match(None)
