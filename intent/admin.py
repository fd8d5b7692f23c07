"""Admin pages of the intent catalog: search, filters, and examples inline."""

from django.contrib import admin, messages
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
from .services.optimization import PromptVersionNotActivatable, prompt_version_activate, prompt_version_deactivate


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
