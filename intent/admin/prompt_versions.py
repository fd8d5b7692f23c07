"""Admin page of the prompt versions: what each hash stands for, and activating a saved program."""

from __future__ import annotations

from django.contrib import admin, messages

from ..models import PromptVersion
from ..services import PromptVersionNotActivatable, prompt_version_activate, prompt_version_deactivate


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
