"""Admin pages of the mirror: read-only (MLflow is the system of record; the sync writes these rows), and
the "Detection analytics" dashboard."""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .models import DailyRollup, DetectionAnalytics, MirroredRun, SyncState

DASHBOARD_PERIODS = (7, 30, 90)
DASHBOARD_DEFAULT_DAYS = 30


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(MirroredRun)
class MirroredRunAdmin(ReadOnlyAdmin):
    list_display = ("start_time", "detected_intent", "confidence_score", "response_time_ms", "user_role",
                    "current_module", "model_name", "prompt_version", "status", "is_error", "run_id")
    list_filter = ("status", "is_error", "fallback_used", "detected_intent", "user_role", "current_module",
                   "model_name", "prompt_version", "error_category")
    search_fields = ("=request_id", "=run_id")
    date_hierarchy = "start_time"
    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is not worth it


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ("day", "dimension", "value", "runs", "errors", "fallbacks", "out_of_scope", "computed_at")
    list_filter = ("dimension",)
    search_fields = ("value",)
    date_hierarchy = "day"


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ("experiment_name", "experiment_id", "last_succeeded_at", "lag_display", "mirrored_runs",
                    "runs_seen", "last_reconciled_at", "error_display")
    readonly_fields = [field.name for field in SyncState._meta.fields] + ["lag_display"]

    @admin.display(description="lag")
    def lag_display(self, obj: SyncState) -> str:
        lag = obj.lag
        return "-" if lag is None else str(lag).split(".")[0]

    @admin.display(description="last error")
    def error_display(self, obj: SyncState):
        return format_html('<span style="color: #ba2121">{}</span>', obj.last_error[:120]) if obj.last_error else "-"


@admin.register(DetectionAnalytics)
class DetectionAnalyticsAdmin(admin.ModelAdmin):
    """The dashboard: KPI tiles, daily trends, distributions, errors and prompt versions of a period.

    The page is a shell: its script (static `analytics/dashboard.js`, charts by the vendored Chart.js) reads
    the JSON of `/api/analytics/mlflow/report` (and `health`) with the admin's session, so what it shows is
    exactly what the API answers. Every staff member may see it, as they may read the API."""

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.dashboard_view), name=name)]

    def dashboard_view(self, request):
        try:
            days = int(request.GET.get("days", DASHBOARD_DEFAULT_DAYS))
        except ValueError:
            days = DASHBOARD_DEFAULT_DAYS
        if days not in DASHBOARD_PERIODS:
            days = DASHBOARD_DEFAULT_DAYS
        context = {
            **self.admin_site.each_context(request),
            "title": "Detection analytics",
            "opts": self.opts,
            "days": days,
            "periods": DASHBOARD_PERIODS,
            "report_url": reverse("analytics:report"),
            "health_url": reverse("analytics:health"),
            "runs_url": reverse("admin:analytics_mirroredrun_changelist"),
        }
        return TemplateResponse(request, "admin/analytics/dashboard.html", context)
