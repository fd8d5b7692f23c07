"""Admin pages of the mirror: read-only (MLflow is the system of record; the sync writes these rows)."""

from django.contrib import admin
from django.utils.html import format_html

from .models import DailyRollup, MirroredRun, SyncState


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
