"""Admin pages of the intent catalog (search, filters, examples inline), of the tracking outboxes (detections,
dead letters, feedback), the label history and the prompt versions.

The detections' lists read their columns out of the record's JSON payload with database expressions (sortable,
no Python per row); links to the mirror go through its admin URLs alone (`analytics` models are not imported)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, FloatField, OuterRef, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from intentsite import contract

from .models import (
    AgentTemplate,
    DeadLetter,
    DetectionFeedback,
    DetectionLabel,
    DetectionRecord,
    IntentCategory,
    IntentExample,
    PromptVersion,
    WorkflowTemplate,
)
from .program import OUT_OF_SCOPE
from .services import (
    PromptVersionNotActivatable,
    detection_feedback_replay,
    detection_records_replay,
    prompt_version_activate,
    prompt_version_deactivate,
)


class IntentExampleInline(admin.TabularInline):
    model = IntentExample
    extra = 1
    fields = ("text",)


@admin.register(IntentCategory)
class IntentCategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "module", "requires_workflow", "is_active", "example_count", "updated_at")
    list_filter = ("is_active", "requires_workflow", "module")
    list_editable = ("requires_workflow", "is_active")
    search_fields = ("name", "description", "examples__text")
    inlines = [IntentExampleInline]
    actions = ["activate", "deactivate"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_example_count=Count("examples"))

    @admin.display(description="examples", ordering="_example_count")
    def example_count(self, obj):
        return obj._example_count

    @admin.action(description="Activate selected categories")
    def activate(self, request, queryset):
        queryset.update(is_active=True, updated_at=timezone.now())

    @admin.action(description="Deactivate selected categories")
    def deactivate(self, request, queryset):
        queryset.update(is_active=False, updated_at=timezone.now())

    def get_search_results(self, request, queryset, search_term):
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), False


class TemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "module", "is_active", "intent_list", "updated_at")
    list_filter = ("is_active", "module")
    search_fields = ("name", "description", "intents__name")
    filter_horizontal = ("intents",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("intents")

    @admin.display(description="intents")
    def intent_list(self, obj):
        return ", ".join(intent.name for intent in obj.intents.all())


admin.site.register(WorkflowTemplate, TemplateAdmin)
admin.site.register(AgentTemplate, TemplateAdmin)


# --- Detections, dead letters, feedback and labels --------------------------------------------------------

TOP_AUTHORS = 20  # authors offered by the labels' filter (the most active ones)
EMPTY = "-"  # what the admin shows for an empty value (a read-only field would show `None`)


def _utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else EMPTY


def _short_id(value) -> str:
    """An id as its first 8 characters, the whole id in the title (and in searches: they match a prefix)."""
    full = str(value)
    return format_html('<span class="intent-id" title="{}">{}</span>', full, full[:8])


def _breakable(value: str | None):
    """An intent that may wrap after its underscores (`international_visa`), so that it does not widen the list."""
    if not value:
        return EMPTY
    return format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in value.split("_")))


def _mlflow_run_url(run_id: str) -> str | None:
    """The run in the MLflow UI, by its direct route (a record does not know its experiment's id)."""
    return f"{settings.MLFLOW_UI_URL}/#/runs/{run_id}" if settings.MLFLOW_UI_URL and run_id else None


def _request_url(changelist: str, request_id) -> str:
    """A changelist filtered by request id: how the records and the mirror (`analytics`) link to each other."""
    return f"{reverse(changelist)}?{urlencode({'request_id': str(request_id)})}"


def _links(*links: tuple[str | None, str, str]) -> str:
    """(url, text, title) links joined by dots; those without a url left out."""
    shown = [(url, title, text) for url, text, title in links if url]
    if not shown:
        return EMPTY
    return format_html_join(" · ", '<a href="{}" title="{}">{}</a>', shown)


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
        return _utc(obj.created_at)

    @admin.display(description="intent", ordering="_intent")
    def intent(self, obj):
        return _breakable(obj._intent)

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
        kind = "error" if obj._status == "error" else "fallback" if obj._error_category else "ok"
        badge = format_html('<span class="intent-badge is-{}">{}</span>', kind, obj._status)
        if not obj._error_category:
            return badge
        return format_html('{}<div class="intent-quiet" title="{}">{}</div>', badge, obj._error_type or "",
                           _breakable(obj._error_category))

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
        return _short_id(obj.request_id)

    @admin.display(description="links")
    def links(self, obj):
        """Its MLflow run and its mirrored run, once it is logged (the mirror has it after the next sync)."""
        if obj.state != DetectionRecord.State.LOGGED or not obj.mlflow_run_id:
            return EMPTY
        return _links((_mlflow_run_url(obj.mlflow_run_id), "run", f"MLflow run {obj.mlflow_run_id}"),
                      (_request_url("admin:analytics_mirroredrun_changelist", obj.request_id), "mirror",
                       "The mirrored run (analytics)"))

    @admin.display(description="label history")
    def label_history(self, obj):
        """Every label given to the detection, newest first, with its author."""
        labels = DetectionLabel.objects.filter(request_id=obj.request_id).select_related("user")
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (_utc(label.created_at), label.expected_intent, "yes" if label.is_correct else "no",
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


@admin.register(DetectionFeedback)
class DetectionFeedbackAdmin(admin.ModelAdmin):
    list_display = ("updated", "request_short", "correction", "correct", "author", "revision", "state", "links")
    list_filter = ("state", "is_correct", "expected_intent")
    search_fields = ("^request_id", "detected_intent", "expected_intent", "comment", "^mlflow_run_id")
    date_hierarchy = "updated_at"
    readonly_fields = [f.name for f in DetectionFeedback._meta.fields] + ["links"]
    list_select_related = ("user",)
    actions = ["replay"]

    class Media:
        css = {"all": ("intent/admin.css",)}

    def get_queryset(self, request):
        # The record's primary key when it is still there (records go after their retention; feedback stays).
        record = DetectionRecord.objects.filter(request_id=OuterRef("request_id")).values("pk")[:1]
        return super().get_queryset(request).annotate(_record_pk=Subquery(record))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="updated (UTC)", ordering="updated_at")
    def updated(self, obj):
        return _utc(obj.updated_at)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        return _short_id(obj.request_id)

    @admin.display(description="detected → expected", ordering="expected_intent")
    def correction(self, obj):
        return format_html("{} → {}", obj.detected_intent, obj.expected_intent)

    @admin.display(description="correct?", boolean=True, ordering="is_correct")
    def correct(self, obj):
        return obj.is_correct

    @admin.display(description="author", ordering="user__username")
    def author(self, obj):
        return obj.user.get_username() if obj.user else None

    @admin.display(description="links")
    def links(self, obj):
        record = reverse("admin:intent_detectionrecord_change", args=[obj._record_pk]) if obj._record_pk else None
        return _links((record, "record", "The detection record"),
                      (_mlflow_run_url(obj.mlflow_run_id), "run", f"MLflow run {obj.mlflow_run_id}"))

    @admin.action(description="Replay dead feedback into MLflow")
    def replay(self, request, queryset):
        count = detection_feedback_replay(  # the dead ones among those selected
            request_ids=[str(r) for r in queryset.values_list("request_id", flat=True)])
        self.message_user(request, f"Replayed {count} dead feedback(s).")


class LabelAuthorFilter(admin.SimpleListFilter):
    """The most active authors (a labelled detection's owner may label it too: not every user belongs here)."""

    title = "author"
    parameter_name = "author"

    def lookups(self, request, model_admin):
        authors = (DetectionLabel.objects.filter(user__isnull=False).values("user_id", "user__username")
                   .annotate(labels=Count("id")).order_by("-labels", "user__username")[:TOP_AUTHORS])
        return [(str(author["user_id"]), author["user__username"]) for author in authors]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(user_id=self.value())


@admin.register(DetectionLabel)
class DetectionLabelAdmin(admin.ModelAdmin):
    """The history of labels, read-only: who said what about which detection, and when."""

    list_display = ("created", "request_short", "expected_intent", "correct", "author", "comment_short")
    list_filter = ("is_correct", LabelAuthorFilter)
    search_fields = ("^request_id", "=expected_intent", "=user__username")
    search_help_text = "A request id (or its first characters), an intent or an author's username."
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = [f.name for f in DetectionLabel._meta.fields]

    class Media:
        css = {"all": ("intent/admin.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="time (UTC)", ordering="created_at")
    def created(self, obj):
        return _utc(obj.created_at)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        """The short id, linked to the detection's record (gone after its retention: an empty list then)."""
        return format_html('<a href="{}">{}</a>', _request_url("admin:intent_detectionrecord_changelist",
                                                                obj.request_id), _short_id(obj.request_id))

    @admin.display(description="correct?", boolean=True, ordering="is_correct")
    def correct(self, obj):
        return obj.is_correct

    @admin.display(description="author", ordering="user__username")
    def author(self, obj):
        return obj.user.get_username() if obj.user else None

    @admin.display(description="comment")
    def comment_short(self, obj):
        if not obj.comment:
            return EMPTY
        return format_html('<span title="{}">{}</span>', obj.comment, Truncator(obj.comment).chars(80))

@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "model_name", "is_active", "base_version", "first_seen", "activated_at",
                    "has_program", "mlflow_run_id")
    list_filter = ("is_active", "model_name")
    search_fields = ("version", "model_name", "base_version")
    readonly_fields = ("version", "model_name", "description", "first_seen", "mlflow_run_id", "program_path",
                       "base_version", "is_active", "activated_at")
    actions = ["activate", "deactivate"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="saved program", boolean=True)
    def has_program(self, obj):
        return bool(obj.program_path)

    @admin.action(description="Activate the selected version (its saved program answers every detection)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", level=messages.ERROR)
            return
        try:
            version = prompt_version_activate(version=queryset.get().version)
        except PromptVersionNotActivatable as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return
        self.message_user(request, f"Prompt version {version.version} is active.")

    @admin.action(description="Back to the default program (deactivate all)")
    def deactivate(self, request, queryset):
        prompt_version_deactivate()
        self.message_user(request, "The default program is active.")
