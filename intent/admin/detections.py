"""Admin pages of the detection records (the tracking outbox) and their dead letters.

The lists read their columns out of the record's JSON payload with database expressions (sortable, no Python per
row); links to the mirror go through its admin URLs alone (`analytics` models are not imported)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import FloatField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from intentsite import contract

from ..models import DeadLetter, DetectionLabel, DetectionRecord, IntentCategory
from ..program import OUT_OF_SCOPE
from ..services import detection_records_replay
from .display import EMPTY, breakable, links_join, mlflow_run_url, request_url, short_id, utc_time


def _payload_columns() -> dict:
    """The list's columns, read out of the record's JSON payload by the database (so they sort)."""
    def tag(name: str) -> KT:
        return KT(f"payload__tags__{name}")

    def metric(name: str) -> Cast:
        return Cast(KT(f"payload__metrics__{name}"), FloatField())

    return {
        "_intent": tag(contract.DETECTED_INTENT),
        "_status": tag(contract.STATUS),
        "_error_category": tag(contract.ERROR_CATEGORY),
        "_error_type": tag(contract.ERROR_TYPE),
        "_answered_by": tag(contract.ANSWERED_BY),
        "_model": KT(f"payload__params__{contract.MODEL_NAME}"),
        "_confidence": metric(contract.CONFIDENCE_SCORE),
        "_latency": metric(contract.RESPONSE_TIME_MS),
    }


class DetectedIntentFilter(admin.SimpleListFilter):
    """The catalog's intents and out_of_scope: a bounded list, found without reading the records' payloads."""

    title = "intent"
    parameter_name = "intent"

    def lookups(self, request, model_admin):
        names = list(IntentCategory.objects.order_by("name").values_list("name", flat=True))
        if OUT_OF_SCOPE not in names:
            names.append(OUT_OF_SCOPE)
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(**{f"payload__tags__{contract.DETECTED_INTENT}": self.value()})


@admin.register(DetectionRecord)
class DetectionRecordAdmin(admin.ModelAdmin):
    list_display = ("created", "intent", "confidence", "status", "model_answer", "latency", "tracking_state",
                    "request_short", "links")
    list_filter = ("state", DetectedIntentFilter)
    search_fields = ("^request_id", "^mlflow_run_id", f"=payload__tags__{contract.DETECTED_INTENT}")
    search_help_text = "A request id or run id (or their first characters), or an intent."
    date_hierarchy = "created_at"
    fieldsets = (
        ("Detection", {"fields": ("request_id", "created", "user", "intent", "confidence_detail", "status",
                                  "model_answer", "latency")}),
        ("Tracking", {"fields": ("state", "attempts", "mlflow_run_id", "links", "logged_at", "replayed_at",
                                 "lease_until", "lease_token", "last_error")}),
        ("Labels", {"fields": ("label_history",)}),
        ("The run to log (payload)", {"fields": ("payload_pretty",)}),
    )
    readonly_fields = [f.name for f in DetectionRecord._meta.fields] + [
        "created", "intent", "confidence_detail", "status", "model_answer", "latency", "links", "label_history",
        "payload_pretty"]

    class Media:
        css = {"all": ("intent/admin.css",)}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**_payload_columns())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, obj):
        return utc_time(obj.created_at)

    @admin.display(description="intent", ordering="_intent")
    def intent(self, obj):
        return breakable(obj._intent)

    @admin.display(description="conf.", ordering="_confidence")
    def confidence(self, obj):
        return EMPTY if obj._confidence is None else f"{obj._confidence:.2f}"

    @admin.display(description="confidence")
    def confidence_detail(self, obj):
        return self.confidence(obj)

    @admin.display(description="status", ordering="_status")
    def status(self, obj):
        """success or error, with the error category when there is one (a success with one fell back)."""
        if not obj._status:
            return EMPTY
        kind = "error" if obj._status == contract.STATUS_ERROR else "fallback" if obj._error_category else "ok"
        badge = format_html('<span class="intent-badge is-{}">{}</span>', kind, obj._status)
        if not obj._error_category:
            return badge
        return format_html('{}<div class="intent-quiet" title="{}">{}</div>', badge, obj._error_type or "",
                           breakable(obj._error_category))

    @admin.display(description="model", ordering="_model")
    def model_answer(self, obj):
        """The configured model, and below it the one that answered when it was another (a fallback)."""
        if obj._answered_by and obj._answered_by != obj._model:
            return format_html('{}<div class="intent-quiet" title="answered by">↳ {}</div>', obj._model or "-",
                               obj._answered_by)
        return obj._model or EMPTY

    @admin.display(description="latency ms", ordering="_latency")
    def latency(self, obj):
        return EMPTY if obj._latency is None else f"{obj._latency:.1f}"

    @admin.display(description="tracking", ordering="state")
    def tracking_state(self, obj):
        if obj.state == DetectionRecord.State.LOGGED or not obj.attempts:
            return obj.state
        return format_html('{} <span class="intent-quiet" title="attempts">×{}</span>', obj.state, obj.attempts)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        return short_id(obj.request_id)

    @admin.display(description="links")
    def links(self, obj):
        """Its MLflow run and its mirrored run, once it is logged (the mirror has it after the next sync)."""
        if obj.state != DetectionRecord.State.LOGGED or not obj.mlflow_run_id:
            return EMPTY
        return links_join((mlflow_run_url(obj.mlflow_run_id), "run", f"MLflow run {obj.mlflow_run_id}"),
                          (request_url("admin:analytics_mirroredrun_changelist", obj.request_id), "mirror",
                           "The mirrored run (analytics)"))

    @admin.display(description="label history")
    def label_history(self, obj):
        """Every label given to the detection, newest first, with its author."""
        labels = DetectionLabel.objects.filter(request_id=obj.request_id).select_related("user")
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (utc_time(label.created_at), label.expected_intent, "yes" if label.is_correct else "no",
             label.user.get_username() if label.user else "-", label.comment)
            for label in labels.order_by("-created_at", "-id")))
        if not rows:
            return "No label yet."
        return format_html('<table class="intent-labels"><thead><tr><th>time (UTC)</th><th>intent</th>'
                           "<th>correct?</th><th>author</th><th>comment</th></tr></thead><tbody>{}</tbody></table>",
                           rows)

    @admin.display(description="payload")
    def payload_pretty(self, obj):
        return format_html('<pre class="intent-json">{}</pre>',
                           json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False))


@admin.register(DeadLetter)
class DeadLetterAdmin(DetectionRecordAdmin):
    list_display = ("created", "intent", "confidence", "status", "model_answer", "latency", "attempts", "error",
                    "request_short")
    list_filter = (DetectedIntentFilter,)
    actions = ["replay"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(state=DetectionRecord.State.DEAD)

    @admin.display(description="last error")
    def error(self, obj):
        if not obj.last_error:
            return EMPTY
        return format_html('<span title="{}">{}</span>', obj.last_error, Truncator(obj.last_error).chars(60))

    @admin.action(description="Replay into MLflow")
    def replay(self, request, queryset):
        count = detection_records_replay(request_ids=[str(r) for r in queryset.values_list("request_id", flat=True)])
        self.message_user(request, f"Replayed {count} dead letter(s).")
