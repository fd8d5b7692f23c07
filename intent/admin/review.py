"""Admin pages of what reviewers see: each detection's story (its stored detail, labels, links to MLflow and the
mirror), and the labelling page that walks the review queue with the keyboard."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from intentsite.admin import ReadOnlyAdmin

from ..models import DetectionDetail, DetectionFeedback, DetectionLabel, DetectionRecord
from ..program import OUT_OF_SCOPE
from ..review.apis import LABEL_PERMISSION
from ..review.selectors import Strategy
from ..selectors import intent_names_active
from ..tracking.bulk import run_id_for
from ..tracking.traces import trace_id_for
from .display import EMPTY, breakable, links_join, mlflow_run_url, request_url, short_id, utc_time


@admin.register(DetectionDetail)
class DetectionDetailAdmin(ReadOnlyAdmin):
    """Detections as reviewers see them (the dashboard's drill-downs land here, filtered); one opens its story."""

    list_display = ("created", "request_short", "message_short", "intent", "confidence_shown", "margin_shown",
                    "model_name", "prompt_version", "status", "labelled")
    # Filters of few values only: each one's choices are a DISTINCT over the table. The dashboard's drill-downs
    # filter on any field through the URL (`?prompt_version=…&detected_intent=…&created_at__gte=…`).
    list_filter = ("status", "error_category", "disagreement")
    search_fields = ("^request_id", "message", "=detected_intent")
    date_hierarchy = "created_at"
    list_per_page = 50
    fieldsets = (
        ("Answer", {"fields": ("request_id", "created", "message_shown", "detected_intent", "confidence",
                               "status", "error_category", "template_matched", "model_name", "prompt_version")}),
        ("Context", {"fields": ("user_role", "current_module", "current_tab")}),
        ("Why", {"fields": ("alternatives_table", "margin", "local_intent", "disagreement")}),
        ("Labels", {"fields": ("labels_history",)}),
        ("Trace", {"fields": ("spans", "trace")}),
        ("Elsewhere", {"fields": ("links",)}),
    )
    readonly_fields = ("request_id", "created", "message_shown", "detected_intent", "confidence", "status",
                       "error_category", "template_matched", "model_name", "prompt_version", "user_role",
                       "current_module", "current_tab", "alternatives_table", "margin", "local_intent",
                       "disagreement", "labels_history", "spans", "links", "trace")

    class Media:
        css = {"all": ("intent/admin.css",)}

    def get_queryset(self, request):
        labelled = Exists(DetectionFeedback.objects.filter(request_id=OuterRef("request_id")))
        return super().get_queryset(request).defer("alternatives").annotate(_labelled=labelled)

    def has_view_permission(self, request, obj=None):
        """Messages are personal data, redacted or not: the model's view permission, or a reviewer's."""
        return super().has_view_permission(request, obj) or request.user.has_perm(LABEL_PERMISSION)

    def has_module_permission(self, request):
        return super().has_module_permission(request) or request.user.has_perm(LABEL_PERMISSION)

    def get_urls(self):
        review = path("review/", self.admin_site.admin_view(self.review_view), name="intent_detectiondetail_review")
        return [review, *super().get_urls()]

    def review_view(self, request):
        """One unlabelled detection at a time, from the review queue: pick the intent (keys 1–5 the alternatives,
        0 out of scope, or type one), Enter saves it through the feedback API and brings the next."""
        if not request.user.has_perm(LABEL_PERMISSION):
            raise PermissionDenied
        strategy = request.GET.get("strategy", Strategy.UNCERTAIN.value)
        if strategy not in {s.value for s in Strategy}:
            strategy = Strategy.UNCERTAIN.value
        context = {
            **self.admin_site.each_context(request),
            "title": "Label detections",
            "opts": self.opts,
            "strategy": strategy,
            "strategies": [s.value for s in Strategy],
            "queue_url": reverse("intent:review-queue"),
            "feedback_url": reverse("intent:feedback"),
            "story_url": reverse("admin:intent_detectiondetail_changelist"),
            "intents": [*intent_names_active(), OUT_OF_SCOPE],
            "messages_stored": settings.INTENT_STORE_MESSAGES,
        }
        return TemplateResponse(request, "admin/intent/review.html", context)

    @admin.display(description="time (UTC)", ordering="created_at")
    def created(self, obj):
        return utc_time(obj.created_at)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        return short_id(obj.request_id)

    @admin.display(description="message")
    def message_short(self, obj):
        return Truncator(obj.message).chars(80) if obj.message else EMPTY

    @admin.display(description="message (redacted)")
    def message_shown(self, obj):
        if obj.message:
            return obj.message
        return "erased after its retention" if obj.message_erased_at else "not stored (INTENT_STORE_MESSAGES=0)"

    @admin.display(description="intent", ordering="detected_intent")
    def intent(self, obj):
        return breakable(obj.detected_intent)

    @admin.display(description="confidence", ordering="confidence")
    def confidence_shown(self, obj):
        return f"{obj.confidence:.2f}"

    @admin.display(description="margin", ordering="margin")
    def margin_shown(self, obj):
        return EMPTY if obj.margin is None else f"{obj.margin:.2f}"

    @admin.display(description="labelled", boolean=True, ordering="_labelled")
    def labelled(self, obj):
        return obj._labelled

    @admin.display(description="the local model's ranking")
    def alternatives_table(self, obj):
        if not obj.alternatives:
            return EMPTY
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{:.3f}</td></tr>",
                                ((rank, intent, probability)
                                 for rank, (intent, probability) in enumerate(obj.alternatives, start=1)))
        return format_html('<table class="intent-alternatives"><tr><th>#</th><th>intent</th><th>probability</th>'
                           "</tr>{}</table>", rows)

    @admin.display(description="labels, newest first")
    def labels_history(self, obj):
        labels = DetectionLabel.objects.filter(request_id=obj.request_id).select_related("user")
        if not labels:
            return "none yet"
        return format_html_join(format_html("<br>"), "{} · {} · {} {}", (
            (utc_time(label.created_at), label.user or "nobody", label.expected_intent,
             f"({label.comment})" if label.comment else "") for label in labels))

    @admin.display(description="links")
    def links(self, obj):
        record = DetectionRecord.objects.filter(request_id=obj.request_id).values("pk", "mlflow_run_id").first()
        run_id = record["mlflow_run_id"] if record else run_id_for(str(obj.request_id))  # the bulk writer's
        return links_join(
            (mlflow_run_url(run_id), "MLflow run", "the run (and its trace, in its Traces tab) in the MLflow UI"),
            (request_url("admin:analytics_mirroredrun_changelist", obj.request_id), "mirrored run",
             "the run as the analytics mirror holds it"),
            (reverse("admin:intent_detectionrecord_change", args=[record["pk"]]) if record else None,
             "tracking record", "the outbox row (kept until TRACKING_RECORD_RETENTION_DAYS after logging)"),
        )

    @admin.display(description="MLflow trace id")
    def trace(self, obj):
        return trace_id_for(str(obj.request_id))

    @admin.display(description="spans")
    def spans(self, obj):
        """The trace's spans as the detail keeps them (redacted, without the prompt: the trace in MLflow has it); no
        MLflow call from this page."""
        trace = obj.steps
        if not trace:
            return "not traced (INTENT_TRACE_SAMPLE_RATE)"
        trace = {**trace, "alternatives": obj.alternatives}
        rows = []
        if (lm := trace.get("lm")) is not None:
            rows.append(("lm_call", f"{lm.get('elapsed_ms') or 0:.1f} ms",
                         f"response: {Truncator(lm.get('response') or lm.get('error') or '').chars(300)}"))
        if trace.get("alternatives"):
            rows.append(("local_model", f"{trace.get('local_ms') or 0:.1f} ms",
                         ", ".join(f"{i} {p:.2f}" for i, p in trace["alternatives"])))
        rows.append(("template_match", "", f"workflow {trace.get('workflow_template') or EMPTY}, "
                                           f"agent {trace.get('agent_template') or EMPTY}"))
        return format_html('<table class="intent-alternatives"><tr><th>span</th><th>time</th><th>what</th></tr>{}'
                           "</table>", format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows))
