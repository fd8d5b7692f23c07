"""Boards in the admin: list, edit (widgets as JSON), and create the default boards."""

from django.contrib import admin, messages

from ..models import Board
from .services import default_boards_create


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "visibility", "group", "widget_count", "updated_at")
    list_filter = ("visibility",)
    search_fields = ("name",)
    actions = ["create_defaults"]

    @admin.display(description="widgets")
    def widget_count(self, obj):
        return len(obj.widgets or [])

    @admin.action(description="Create the default boards (once each)", permissions=["add"])
    def create_defaults(self, request, queryset):
        self.message_user(request, f"{default_boards_create()} default board(s) created.", messages.SUCCESS)
