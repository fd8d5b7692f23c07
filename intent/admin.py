"""Admin pages of the intent catalog: search, filters, and examples inline."""

from django.contrib import admin
from django.db.models import Count
from django.utils import timezone

from .models import (
    AgentTemplate,
    DeadLetter,
    DetectionFeedback,
    DetectionRecord,
    IntentCategory,
    IntentExample,
    PromptVersion,
    WorkflowTemplate,
)
from .services import dead_letters_replay, detection_feedback_replay


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


@admin.register(DetectionRecord)
class DetectionRecordAdmin(admin.ModelAdmin):
    list_display = ("request_id", "created_at", "state", "attempts", "mlflow_run_id", "logged_at")
    list_filter = ("state",)
    search_fields = ("request_id", "mlflow_run_id")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in DetectionRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(DetectionRecordAdmin):
    list_display = ("request_id", "created_at", "attempts", "last_error")
    list_filter = ()
    actions = ["replay"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(state=DetectionRecord.State.DEAD)

    @admin.action(description="Replay into MLflow")
    def replay(self, request, queryset):
        count = dead_letters_replay(request_ids=[str(r) for r in queryset.values_list("request_id", flat=True)])
        self.message_user(request, f"Replayed {count} dead letter(s).")


@admin.register(DetectionFeedback)
class DetectionFeedbackAdmin(admin.ModelAdmin):
    list_display = ("request_id", "detected_intent", "expected_intent", "is_correct", "user", "updated_at",
                    "state", "attempts")
    list_filter = ("state", "is_correct", "expected_intent")
    search_fields = ("request_id", "detected_intent", "expected_intent", "comment", "mlflow_run_id")
    date_hierarchy = "updated_at"
    readonly_fields = [f.name for f in DetectionFeedback._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Replay dead feedback into MLflow")
    def replay(self, request, queryset):
        count = detection_feedback_replay(
            request_ids=[str(r) for r in queryset.filter(state="dead").values_list("request_id", flat=True)])
        self.message_user(request, f"Replayed {count} dead feedback(s).")


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "model_name", "first_seen", "mlflow_run_id")
    search_fields = ("version", "model_name")
    readonly_fields = ("version", "model_name", "description", "first_seen", "mlflow_run_id")

    def has_add_permission(self, request):
        return False
