"""Admin pages of the feedback (with a replay of dead ones) and of the label history behind it."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from intentsite.admin import ReadOnlyAdmin

from ..models import DetectionFeedback, DetectionLabel, DetectionRecord, Outbox
from ..services import detection_feedback_replay
from .display import EMPTY, links_join, mlflow_run_url, request_url, short_id, utc_time

OUTBOX_FIELDS = tuple(field.name for field in Outbox._meta.fields if field.name != "request_id")
TOP_AUTHORS = 20  # authors offered by the labels' filter (the most active ones)


@admin.register(DetectionFeedback)
class DetectionFeedbackAdmin(admin.ModelAdmin):
    list_display = ("updated", "request_short", "correction", "correct", "author", "revision", "state", "links")
    list_filter = ("state", "is_correct", "expected_intent")
    search_fields = ("^request_id", "detected_intent", "expected_intent", "comment", "^mlflow_run_id")
    date_hierarchy = "updated_at"
    # the feedback first, then its outbox fields (which the model inherits first, from `Outbox`)
    readonly_fields = ("id", "request_id", "detected_intent", "expected_intent", "is_correct", "comment", "user",
                       "created_at", "updated_at", "revision", *OUTBOX_FIELDS, "links")
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
        return utc_time(obj.updated_at)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        return short_id(obj.request_id)

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
        return links_join((record, "record", "The detection record"),
                          (mlflow_run_url(obj.mlflow_run_id), "run", f"MLflow run {obj.mlflow_run_id}"))

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
class DetectionLabelAdmin(ReadOnlyAdmin):
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

    @admin.display(description="time (UTC)", ordering="created_at")
    def created(self, obj):
        return utc_time(obj.created_at)

    @admin.display(description="request", ordering="request_id")
    def request_short(self, obj):
        """The short id, linked to the detection's record (gone after its retention: an empty list then)."""
        return format_html('<a href="{}">{}</a>', request_url("admin:intent_detectionrecord_changelist",
                                                               obj.request_id), short_id(obj.request_id))

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
