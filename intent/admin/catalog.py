"""Admin pages of the intent catalog: categories (search, filters, examples inline) and templates."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.utils import timezone

from ..models import AgentTemplate, IntentCategory, IntentExample, WorkflowTemplate


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
