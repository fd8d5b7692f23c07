"""Admin pages of template-gap mining: each run's clusters, and the action that turns a cluster into an intent."""

from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from ..gaps.services import ClusterAlreadyAdopted, gap_cluster_adopt
from ..models import GapCluster, GapMining
from .display import EMPTY, utc_time


class GapClusterInline(admin.TabularInline):
    model = GapCluster
    fields = ("rank", "size", "share", "suggested_name", "top_terms", "examples", "adopted_as")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(GapMining)
class GapMiningAdmin(admin.ModelAdmin):
    list_display = ("computed", "days", "detections", "candidates", "clustered", "clusters", "seconds")
    readonly_fields = ("computed_at", "days", "detections", "candidates", "clustered", "seconds")
    inlines = [GapClusterInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="computed (UTC)", ordering="computed_at")
    def computed(self, obj):
        return utc_time(obj.computed_at)

    @admin.display(description="clusters")
    def clusters(self, obj):
        return obj.clusters.count()


@admin.register(GapCluster)
class GapClusterAdmin(admin.ModelAdmin):
    list_display = ("suggested_name", "size", "share_percent", "terms", "mined", "intent")
    list_filter = ("mining",)
    readonly_fields = ("mining", "rank", "size", "share", "suggested_name", "top_terms", "examples", "trend",
                       "detected_intents", "adopted_as")
    list_select_related = ("mining", "adopted_as")
    actions = ["adopt"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="share", ordering="share")
    def share_percent(self, obj):
        return f"{obj.share:.1%}"

    @admin.display(description="top terms")
    def terms(self, obj):
        return ", ".join(obj.top_terms[:5])

    @admin.display(description="mined (UTC)", ordering="mining__computed_at")
    def mined(self, obj):
        return utc_time(obj.mining.computed_at)

    @admin.display(description="intent")
    def intent(self, obj):
        if not obj.adopted_as_id:
            return EMPTY
        url = reverse("admin:intent_intentcategory_change", args=[obj.adopted_as_id])
        return format_html('<a href="{}">{}</a>', url, obj.adopted_as.name)

    @admin.action(description="Make an intent of each selected cluster (inactive, with its examples)",
                  permissions=["adopt"])
    def adopt(self, request, queryset):
        for cluster in queryset.select_related("adopted_as"):
            try:
                category = gap_cluster_adopt(cluster=cluster)
            except ClusterAlreadyAdopted as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            self.message_user(request, f"Intent {category.name} created from cluster {cluster.suggested_name}, "
                                       f"inactive: review its examples, then turn it on.", messages.SUCCESS)

    def has_adopt_permission(self, request):
        return request.user.has_perm("intent.add_intentcategory")
