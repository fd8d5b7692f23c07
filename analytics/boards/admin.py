"""Boards in the admin: list, edit (widgets as JSON), create the default boards, and the page that draws a board."""

from django import forms
from django.contrib import admin, messages
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from rest_framework import serializers

from ..models import Board
from .serializers import MAX_WIDGETS, WidgetsField
from .services import boards_triples_request, boards_visible, default_boards_create


class BoardForm(forms.ModelForm):
    """The board's fields; its widgets checked as the API checks them (`WidgetsField`): a widget the API would refuse
    (an unknown metric, a filter that is not one) cannot be saved here either, and gets the API's defaults."""

    class Meta:
        model = Board
        fields = ["name", "description", "owner", "visibility", "group", "widgets"]

    def clean_widgets(self):
        field = WidgetsField(max_length=MAX_WIDGETS)
        try:
            return field.run_validation(self.cleaned_data.get("widgets") or [])
        except serializers.ValidationError as error:
            detail = error.detail if isinstance(error.detail, list) else [error.detail]
            raise forms.ValidationError([str(message) for message in detail]) from error


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    form = BoardForm
    list_display = ("name", "owner", "visibility", "group", "widget_count", "updated_at", "page_link")
    list_filter = ("visibility",)
    search_fields = ("name",)
    actions = ["create_defaults"]
    change_form_template = "admin/analytics/board/change_form.html"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        boards_triples_request()

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        boards_triples_request()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        boards_triples_request()

    @admin.display(description="widgets")
    def widget_count(self, obj):
        return len(obj.widgets or [])

    @admin.display(description="page")
    def page_link(self, obj):
        return format_html('<a href="{}">view board</a>', reverse("admin:analytics_board_view", args=[obj.pk]))

    @admin.action(description="Create the default boards (once each)", permissions=["add"])
    def create_defaults(self, request, queryset):
        self.message_user(request, f"{default_boards_create()} default board(s) created.", messages.SUCCESS)

    def get_urls(self):
        view = path("<path:object_id>/view/", self.admin_site.admin_view(self.board_view),
                    name=f"{self.opts.app_label}_{self.opts.model_name}_view")
        return [view, *super().get_urls()]

    def board_view(self, request, object_id: str):
        """The board drawn: a shell that analytics/board.js fills from the boards API. Any staff member sees the
        boards the API shows them (their own, shared with them); whether they may change it, the API says."""
        board = boards_visible(user=request.user).filter(pk=object_id).first() if object_id.isdigit() else None
        if board is None:
            raise Http404("No board of yours, or shared with you, has this id.")
        context = {
            **self.admin_site.each_context(request),
            "title": board.name,
            "opts": self.opts,
            "board": board,
            "board_url": reverse("boards:board", args=[board.pk]),
            "data_url": reverse("boards:board-data", args=[board.pk]),
            "export_url": reverse("boards:board-export", args=[board.pk]),
            "dashboard_url": reverse("admin:analytics_detectionanalytics_changelist"),
            "change_url": reverse("admin:analytics_board_change", args=[board.pk])
            if self.has_change_permission(request, board) else "",
            "list_url": reverse("admin:analytics_board_changelist") if self.has_view_permission(request) else "",
        }
        return TemplateResponse(request, "admin/analytics/board.html", context)
