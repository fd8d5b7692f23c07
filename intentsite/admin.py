"""Admin plumbing both apps share (not an app: Django's admin does not autodiscover this module)."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """A model the admin shows and never adds, changes or deletes (what the service writes, or MLflow)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
