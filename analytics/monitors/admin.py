"""Admin of monitors (editable by those with the change permission; the state is the evaluation's) and of their
alerts (read-only history)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from ..models import Alert, Monitor
from .delivery import channel_shown


@admin.register(Monitor)
class MonitorAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "metric", "window_minutes", "state_badge", "last_value", "last_evaluated_at",
                    "enabled")
    list_filter = ("state", "kind", "metric", "enabled")
    search_fields = ("name",)
    readonly_fields = ("state", "state_since", "last_value", "last_evaluated_at", "last_notified_at", "last_details",
                       "channels_status", "created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "kind", "metric", "intent", "filters", "window_minutes", "comparator",
                           "warn_threshold", "alert_threshold", "min_runs", "renotify_minutes")}),
        ("Drift", {"fields": ("segment", "reference_days", "reference_start", "reference_end", "drift_p_value")}),
        ("Notifications", {"fields": ("channels", "channels_status", "webhook_secret")}),
        ("State", {"fields": ("state", "state_since", "last_value", "last_evaluated_at", "last_notified_at",
                              "last_details", "created_by", "created_at", "updated_at")}),
    )

    @admin.display(description="state", ordering="state")
    def state_badge(self, monitor: Monitor):
        return format_html('<span class="ad-state ad-state-{}">{}</span>', monitor.state, monitor.get_state_display())

    @admin.display(description="channels")
    def channels_status(self, monitor: Monitor):
        disabled = set(monitor.disabled_channels or [])
        failures = monitor.channel_failures or {}
        return format_html_join("", "<div>{} — {}</div>", (
            (channel_shown(url), "disabled after failures" if index in disabled
             else f"{failures.get(str(index), 0)} failure(s) in a row")
            for index, url in enumerate(monitor.channels or [])))

    def save_model(self, request, obj: Monitor, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        if "channels" in form.changed_data:
            obj.channel_failures, obj.disabled_channels = {}, []
        super().save_model(request, obj, form, change)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "monitor", "kind", "from_state", "to_state", "value", "threshold", "delivery")
    list_filter = ("to_state", "delivery", "kind", "monitor")
    date_hierarchy = "created_at"
    list_select_related = ("monitor",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
