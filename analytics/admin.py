"""Admin pages of the mirror: read-only (MLflow is the system of record; the sync writes these rows), and
the "Detection analytics" dashboard.

The mirrored runs' list stays cheap on millions of rows: no full count, and its filters offer values read
from the daily rollups (bounded, indexed), never a DISTINCT over the runs. It links to a run's detection
record through the intent admin's URL alone (`intent` models are not imported)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Sum
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from intentsite.admin import ReadOnlyAdmin

from .boards import admin as boards_admin  # noqa: F401 - registers Board
from .boards.services import boards_visible
from .mirror.sketch import LatencySketch
from .models import Board, DailyRollup, DetectionAnalytics, MirroredRun, RollupTripleBuilt, SyncState, compound_parts
from .monitors import admin as monitors_admin  # noqa: F401 - registers Monitor and Alert
from .monitors.selectors import monitors_overview
from .reports.gaps import MESSAGE_PERMISSIONS
from .reports.selectors import mlflow_run_url

DASHBOARD_PERIODS = (7, 30, 90)  # the presets; any range up to DASHBOARD_MAX_DAYS is chosen with dates
DASHBOARD_DEFAULT_DAYS = 30
DASHBOARD_MAX_DAYS = 365  # the reports' longest period
DASHBOARD_BOARDS = 12  # boards the page links to (the admin's list has them all)
FILTER_VALUES = 20  # values a filter of the runs' list offers: the most frequent of the last FILTER_DAYS days
FILTER_DAYS = 30
TEXT_CHARS = 24  # free text (intent, model) is cut there in the list; the title holds all of it
CONTEXT_CHARS = 20  # role and module, which any client may fill with anything
MLFLOW_STATUSES = ("FINISHED", "FAILED", "RUNNING", "SCHEDULED", "KILLED")
EMPTY = "-"  # what the admin shows for an empty value (a read-only field would show `None`)

Dimension = DailyRollup.Dimension


def _utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else EMPTY


def _text(value: str, chars: int = TEXT_CHARS):
    """Free text cut to `chars` (all of it in the title), breakable after its underscores: one long value must
    not widen the list."""
    if not value:
        return EMPTY
    parts = Truncator(value).chars(chars).split("_")
    shown = format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in parts))
    return format_html('<span title="{}">{}</span>', value, shown) if len(value) > chars else shown


def _json(value) -> str:
    if not value:
        return EMPTY
    return format_html('<pre class="run-json">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def _record_url(request_id: str) -> str | None:
    """The intent admin's records filtered by the run's request id (the record may be gone after its retention).
    None when the id is not a detection's (a UUID)."""
    try:
        uuid.UUID(request_id)
    except ValueError:
        return None
    return f"{reverse('admin:intent_detectionrecord_changelist')}?{urlencode({'request_id': request_id})}"


def rollup_top_values(dimension: str) -> list[str]:
    """The FILTER_VALUES most frequent values of a dimension over the last FILTER_DAYS days, from its daily rollups."""
    since = timezone.now().date() - timedelta(days=FILTER_DAYS)
    top = (DailyRollup.objects.filter(dimension=dimension, day__gte=since, folded=False).exclude(value="")
           .values("value").annotate(total=Sum("runs")).order_by("-total", "value")[:FILTER_VALUES])
    return [row["value"] for row in top]


class RollupValuesFilter(admin.SimpleListFilter):
    """A column's FILTER_VALUES most frequent values of the last FILTER_DAYS days, from the daily rollups of its
    dimension: bounded and fast, where a DISTINCT over the mirrored rows would read millions of them and list
    every value a client ever sent. A selected value out of that list stays listed."""

    dimension: str

    def lookups(self, request, model_admin):
        values = rollup_top_values(self.dimension)
        if self.value() and self.value() not in values:
            values.append(self.value())
        return [(value, Truncator(value).chars(TEXT_CHARS)) for value in values]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(**{self.parameter_name: self.value()})


def rollup_values_filter(column: str, dimension: str, title: str) -> type[RollupValuesFilter]:
    return type(f"{column.title().replace('_', '')}Filter", (RollupValuesFilter,),
                {"parameter_name": column, "dimension": dimension, "title": title})


class MlflowStatusFilter(admin.SimpleListFilter):
    """MLflow's run statuses: a fixed list (no DISTINCT over the runs)."""

    title = "MLflow status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status, status.lower()) for status in MLFLOW_STATUSES]

    def queryset(self, request, queryset):
        return queryset if self.value() is None else queryset.filter(status=self.value())


@admin.register(MirroredRun)
class MirroredRunAdmin(ReadOnlyAdmin):
    list_display = ("started", "intent", "confidence", "latency", "outcome", "model_answer", "context", "prompt",
                    "links")
    list_filter = (
        ("start_time", admin.DateFieldListFilter), MlflowStatusFilter, "is_error", "fallback_used",
        rollup_values_filter("detected_intent", Dimension.INTENT, "intent"),
        rollup_values_filter("model_name", Dimension.MODEL, "model"),
        rollup_values_filter("prompt_version", Dimension.PROMPT_VERSION, "prompt version"),
        rollup_values_filter("error_category", Dimension.ERROR_CATEGORY, "error category"),
        rollup_values_filter("user_role", Dimension.ROLE, "role"),
        rollup_values_filter("current_module", Dimension.MODULE, "module"),
        rollup_values_filter("current_tab", Dimension.TAB, "tab"),
        rollup_values_filter("experiment", Dimension.EXPERIMENT, "experiment"),
    )
    search_fields = ("=request_id", "=run_id")
    search_help_text = "A request id or an MLflow run id (whole)."
    # No date_hierarchy: its links are a DISTINCT over the period's runs on every page. The start filter's
    # choices (today, past 7 days, ...) cost nothing; `?start_time__year=2026&start_time__month=11` still works.
    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is not worth it
    fieldsets = (
        ("What", {"fields": ("detected_intent", "outcome", "error_category", "error_type", "expected_intent",
                             "is_correct", "request_id", "started", "ended")}),
        ("How well", {"fields": ("confidence_detail", "latency", "model_name", "answered_by", "fallback_used",
                                 "template_match_rate", "prompt_tokens", "completion_tokens", "cost_usd")}),
        ("Context", {"fields": ("user_role", "current_module", "current_tab", "experiment", "variant", "prompt_version",
                                "dspy_version",
                                "category_source", "requires_workflow", "message_length", "message_word_count",
                                "available_workflow_templates", "available_agent_templates")}),
        ("MLflow", {"fields": ("run_id", "experiment_id", "status", "lifecycle", "links", "tags_pretty",
                               "params_pretty", "metrics_pretty", "mirrored_at", "source_digest")}),
    )
    readonly_fields = [field.name for field in MirroredRun._meta.fields] + [
        "started", "ended", "confidence_detail", "latency", "outcome", "links", "tags_pretty", "params_pretty",
        "metrics_pretty"]

    class Media:
        css = {"all": ("analytics/admin.css",)}

    @admin.display(description="start (UTC)", ordering="start_time")
    def started(self, obj: MirroredRun):
        return _utc(obj.start_time)

    @admin.display(description="end (UTC)", ordering="end_time")
    def ended(self, obj: MirroredRun):
        return _utc(obj.end_time)

    @admin.display(description="intent", ordering="detected_intent")
    def intent(self, obj: MirroredRun):
        return _text(obj.detected_intent)

    @admin.display(description="conf.", ordering="confidence_score")
    def confidence(self, obj: MirroredRun):
        return EMPTY if obj.confidence_score is None else f"{obj.confidence_score:.2f}"

    @admin.display(description="confidence")
    def confidence_detail(self, obj: MirroredRun):
        return self.confidence(obj)

    @admin.display(description="latency ms", ordering="response_time_ms")
    def latency(self, obj: MirroredRun):
        return EMPTY if obj.response_time_ms is None else f"{obj.response_time_ms:.1f}"

    @admin.display(description="status", ordering="is_error")
    def outcome(self, obj: MirroredRun):
        """ok; the error category of a failed detection; the category a detection fell back from; or MLflow's
        status while the run has not ended."""
        if obj.is_error:
            kind, text, title = "error", obj.error_category or "error", obj.error_type
        elif obj.status not in ("FINISHED", ""):
            kind, text, title = "other", obj.status.lower(), "MLflow status"
        elif obj.error_category:
            kind, text, title = "fallback", obj.error_category, " ".join(("answered by the fallback:", obj.error_type))
        else:
            kind, text, title = "ok", "ok", ""
        return format_html('<span class="run-badge is-{}" title="{}">{}</span>', kind, title, text)

    @admin.display(description="model", ordering="model_name")
    def model_answer(self, obj: MirroredRun):
        """The configured model, and below it the one that answered when it was another (a fallback)."""
        if obj.answered_by and obj.answered_by != obj.model_name:
            return format_html('{}<div class="run-quiet" title="answered by">↳ {}</div>', _text(obj.model_name, 32),
                               _text(obj.answered_by, 32))
        return _text(obj.model_name, 32)

    @admin.display(description="role / module", ordering="current_module")
    def context(self, obj: MirroredRun):
        """Who asked (role), and below it where they were (module): one narrow column for both."""
        if not (obj.user_role or obj.current_module):
            return EMPTY
        return format_html('{}<div class="run-quiet">{}</div>', _text(obj.user_role, CONTEXT_CHARS),
                           _text(obj.current_module, CONTEXT_CHARS))

    @admin.display(description="prompt", ordering="prompt_version")
    def prompt(self, obj: MirroredRun):
        if not obj.prompt_version:
            return EMPTY
        return format_html('<span class="run-id" title="{}">{}</span>', obj.prompt_version, obj.prompt_version[:8])

    @admin.display(description="links")
    def links(self, obj: MirroredRun):
        """The run in MLflow (its short id; a link when MLFLOW_UI_URL is set) and its detection record."""
        run_url = mlflow_run_url(experiment_id=obj.experiment_id, run_id=obj.run_id)
        run = (format_html('<a class="run-id" href="{}" title="MLflow run {}">{}</a>', run_url, obj.run_id,
                           obj.run_id[:8]) if run_url else
               format_html('<span class="run-id" title="MLflow run {}">{}</span>', obj.run_id, obj.run_id[:8]))
        record_url = _record_url(obj.request_id)
        if not record_url:
            return run
        return format_html('{} · <a href="{}" title="The detection record (request {})">record</a>', run,
                           record_url, obj.request_id)

    @admin.display(description="tags")
    def tags_pretty(self, obj: MirroredRun):
        return _json(obj.tags)

    @admin.display(description="params")
    def params_pretty(self, obj: MirroredRun):
        return _json(obj.params)

    @admin.display(description="metrics")
    def metrics_pretty(self, obj: MirroredRun):
        return _json(obj.metrics)


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ("day", "dimension", "value", "runs", "errors", "fallbacks", "out_of_scope", "computed_at")
    list_filter = ("dimension",)
    search_fields = ("value",)
    date_hierarchy = "day"
    readonly_fields = ("latency_percentiles",)

    @admin.display(description="Latency percentiles (from the sketch)")
    def latency_percentiles(self, rollup: DailyRollup) -> str:
        sketch = LatencySketch.from_stored(rollup.latency_sketch)
        if not sketch.count:
            return "-"
        quantiles = ", ".join(
            f"p{round(q * 100)} {sketch.quantile(q, low=rollup.latency_min_ms, high=rollup.latency_max_ms):.3g} ms"
            for q in (0.5, 0.95, 0.99))
        return f"{quantiles} ({sketch.count} latencies)"


@admin.register(RollupTripleBuilt)
class RollupTripleBuiltAdmin(ReadOnlyAdmin):
    """The triples of dimensions the sync rolls up because a saved widget needs them (`analytics.mirror.triples`)."""

    list_display = ("dimension", "experiment_id", "built_from", "built_at", "rows")
    list_filter = ("experiment_id",)


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ("experiment_name", "experiment_id", "last_succeeded_at", "lag_display", "mirrored_runs",
                    "runs_seen", "last_reconciled_at", "error_display")
    readonly_fields = [field.name for field in SyncState._meta.fields] + ["lag_display"]

    @admin.display(description="lag")
    def lag_display(self, obj: SyncState) -> str:
        lag = obj.lag
        return "-" if lag is None else str(lag).split(".")[0]

    @admin.display(description="last error")
    def error_display(self, obj: SyncState):
        return format_html('<span style="color: #ba2121">{}</span>', obj.last_error[:120]) if obj.last_error else "-"


@admin.register(DetectionAnalytics)
class DetectionAnalyticsAdmin(admin.ModelAdmin):
    """The dashboard: KPI tiles, daily trends, distributions, errors and prompt versions of a period.

    The page is a shell: its script (static `analytics/dashboard.js`, charts by the vendored Chart.js) reads
    the JSON of `/api/analytics/mlflow/report` (and `health`) with the admin's session, so what it shows is
    exactly what the API answers. Every staff member may see it, as they may read the API."""

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.dashboard_view), name=name)]

    def dashboard_view(self, request):
        """The page's shell; its scripts read the period, filters and comparison from the URL (shareable) and draw
        what the report APIs answer."""
        try:
            days = int(request.GET.get("days", DASHBOARD_DEFAULT_DAYS))
        except ValueError:
            days = DASHBOARD_DEFAULT_DAYS
        if not 1 <= days <= DASHBOARD_MAX_DAYS:
            days = DASHBOARD_DEFAULT_DAYS
        context = {
            **self.admin_site.each_context(request),
            "title": "Detection analytics",
            "opts": self.opts,
            "days": days,
            "periods": DASHBOARD_PERIODS,
            "default_days": DASHBOARD_DEFAULT_DAYS,
            "max_days": DASHBOARD_MAX_DAYS,
            "report_url": reverse("analytics:report"),
            "health_url": reverse("analytics:health"),
            "confusion_url": reverse("analytics:confusion"),
            "runs_url": reverse("admin:analytics_mirroredrun_changelist"),
            "calibration_url": reverse("analytics:calibration"),
            # drill-downs open the detections reviewers see (intent's admin, by its URL name), for those who may
            "details_url": reverse("admin:intent_detectiondetail_changelist") if any(
                request.user.has_perm(perm) for perm in MESSAGE_PERMISSIONS) else "",
            # the free-text filters the report does not list: the rollups' most frequent values suggest them
            "filter_values": self.filter_values(),
            "boards": [(board.name, reverse("admin:analytics_board_view", args=[board.pk]))
                       for board in boards_visible(user=request.user)[:DASHBOARD_BOARDS]],
            "boards_url": reverse("admin:analytics_board_changelist")
            if self.admin_site.get_model_admin(Board).has_view_permission(request) else "",
            **monitors_overview(),
        }
        return TemplateResponse(request, "admin/analytics/dashboard.html", context)

    @staticmethod
    def filter_values() -> dict[str, Any]:
        """Tabs and experiments, and each experiment's variants: free text the report's answer does not list."""
        variants: dict[str, list[str]] = {}
        for value in rollup_top_values(Dimension.VARIANT):
            experiment, variant = compound_parts(value)
            variants.setdefault(experiment, []).append(variant)
        return {"tab": rollup_top_values(Dimension.TAB), "experiment": rollup_top_values(Dimension.EXPERIMENT),
                "variant": variants}
