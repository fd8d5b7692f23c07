"""Admin pages of live prompt experiments: the list (status, split, decision), actions that start and stop them
through the services, and each experiment's results page (per-arm numbers, charts over time, the decision)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from intentsite.exceptions import DomainError

from ..experiments.results import experiment_results_get
from ..experiments.services import experiment_start, experiment_stop
from ..models import Experiment, ShadowDetection
from .display import EMPTY, utc_time


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return EMPTY
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def arm_rows(results: dict, metric: str) -> list[dict]:
    """Each arm's numbers as the page shows them: the primary metric with its interval, the difference from control
    with its interval and p-value (marked provisional before the horizon), the guardrails' metrics."""
    rows = []
    for arm in results["arms"]:
        estimate = arm["metrics"][metric]
        difference = (arm.get("difference") or {}).get(metric)
        row = {
            "name": arm["name"], "prompt_version": arm["prompt_version"], "share": f"{arm['weight']:.0%}",
            "runs": arm["runs"], "labelled": arm["labelled"],
            "primary": f"{_number(estimate['value'])} ({_number(estimate['low'])} – {_number(estimate['high'])})",
            "difference": EMPTY, "p_value": EMPTY,
            "error_rate": _number(arm["metrics"]["error_rate"]["value"]),
            "fallback_rate": _number(arm["metrics"]["fallback_rate"]["value"]),
            "p95": _number(arm["metrics"]["latency_p95_ms"]["value"]),
        }
        if difference is not None:
            row["difference"] = (f"{_number(difference['diff'], signed=True)} ({_number(difference['low'], signed=True)}"
                                 f" – {_number(difference['high'], signed=True)})")
            if difference["p_value"] is not None:
                row["p_value"] = f"{difference['p_value']:.3g}" + (" (provisional)" if difference["provisional"] else "")
        rows.append(row)
    return rows


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "mode", "status", "split", "primary_metric", "started", "verdict", "results")
    list_filter = ("status", "mode")
    search_fields = ("name",)
    readonly_fields = ("status", "decision", "started_at", "ended_at", "created_at", "created_by", "mlflow_run_id")
    actions = ["start", "stop"]

    def get_urls(self):
        results = path("<int:pk>/results/", self.admin_site.admin_view(self.results_view),
                       name="intent_experiment_results")
        return [results, *super().get_urls()]

    def results_view(self, request, pk: int):
        """Any staff member reads an experiment's results, as through the API (admin_view lets only staff in)."""
        experiment = get_object_or_404(Experiment, pk=pk)
        results = experiment_results_get(experiment=experiment)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Experiment {experiment.name}",
            "opts": self.opts,
            "experiment": experiment,
            "results": results,
            "arms": arm_rows(results, experiment.primary_metric),
            "metric_label": experiment.primary_metric,
            "results_url": reverse("intent:experiment-results", args=[experiment.pk]),
            "runs_url": f"{reverse('admin:analytics_mirroredrun_changelist')}?experiment={experiment.name}",
        }
        return TemplateResponse(request, "admin/intent/experiment_results.html", context)

    @admin.display(description="split")
    def split(self, obj):
        return " / ".join(f"{arm['name']} {arm['weight']:.0%}" for arm in obj.arms())

    @admin.display(description="started (UTC)", ordering="started_at")
    def started(self, obj):
        return utc_time(obj.started_at) if obj.started_at else EMPTY

    @admin.display(description="decision")
    def verdict(self, obj):
        decision = obj.decision or {}
        return decision.get("action") or decision.get("state") or EMPTY

    @admin.display(description="results")
    def results(self, obj):
        if obj.status == Experiment.Status.DRAFT:
            return EMPTY
        return format_html('<a href="{}">results</a>', reverse("admin:intent_experiment_results", args=[obj.pk]))

    def _each(self, request, queryset, act, verb: str) -> None:
        for experiment in queryset:
            try:
                act(experiment=experiment)
            except DomainError as error:
                self.message_user(request, f"{experiment.name}: {error}", messages.ERROR)
            else:
                self.message_user(request, f"{experiment.name} {verb}.", messages.SUCCESS)

    @admin.action(description="Start the selected drafts", permissions=["change"])
    def start(self, request, queryset):
        self._each(request, queryset, experiment_start, "started")

    @admin.action(description="Stop the selected experiments", permissions=["change"])
    def stop(self, request, queryset):
        self._each(request, queryset, experiment_stop, "stopped")


@admin.register(ShadowDetection)
class ShadowDetectionAdmin(admin.ModelAdmin):
    list_display = ("request_id", "experiment", "variant", "live_intent", "intent", "agrees", "response_time_ms")
    list_filter = ("experiment",)
    list_select_related = ("experiment",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(boolean=True, description="agrees")
    def agrees(self, obj):
        return obj.intent == obj.live_intent
