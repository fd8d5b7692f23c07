"""Reads of the intent catalog."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Max, Prefetch
from django.utils import timezone

from intentsite.uris import uri_display

from .models import AgentTemplate, DetectionFeedback, DetectionRecord, IntentCategory, IntentExample, WorkflowTemplate
from .program import FALLBACK_CATALOG, OUT_OF_SCOPE, Catalog, IntentSpec, TemplateSpec
from .program.circuit import circuits_state


def catalog_fingerprint() -> tuple:
    """A cheap value that changes whenever the catalog tables change (4 small aggregate queries)."""
    parts: list = []
    for queryset in (
        IntentCategory.objects.all(),
        IntentExample.objects.all(),
        WorkflowTemplate.objects.all(),
        AgentTemplate.objects.all(),
    ):
        row = queryset.aggregate(n=Count("id"), changed=Max("updated_at"))
        parts.extend((row["n"], row["changed"]))
    parts.append(IntentCategory.objects.filter(is_active=True).count())
    return tuple(parts)


def catalog_get() -> Catalog:
    """The active catalog from the database, or the built-in fallback when it holds none."""
    categories = list(
        IntentCategory.objects.filter(is_active=True).prefetch_related(
            Prefetch("examples", queryset=IntentExample.objects.order_by("id").only("category_id", "text"))
        )
    )
    if not categories:
        return FALLBACK_CATALOG
    active_names = {category.name for category in categories}
    return Catalog(
        source="database",
        intents=tuple(
            IntentSpec(
                name=category.name,
                description=category.description,
                module=category.module,
                requires_workflow=category.requires_workflow,
                examples=tuple(example.text for example in category.examples.all()),
            )
            for category in categories
        ),
        workflow_templates=_templates(WorkflowTemplate, active_names),
        agent_templates=_templates(AgentTemplate, active_names),
    )


def _templates(model, active_names: set[str]) -> tuple[TemplateSpec, ...]:
    templates = model.objects.filter(is_active=True).prefetch_related("intents")
    return tuple(
        TemplateSpec(
            name=template.name,
            description=template.description,
            module=template.module,
            intents=tuple(sorted(i.name for i in template.intents.all() if i.name in active_names)),
            trigger_examples=tuple(template.trigger_examples or ()),
        )
        for template in templates
    )


def intent_names_active() -> list[str]:
    """The active catalog's intent names (the built-in fallback's when the database holds none), sorted."""
    names = sorted(IntentCategory.objects.filter(is_active=True).values_list("name", flat=True))
    return names or sorted(intent.name for intent in FALLBACK_CATALOG.intents)


def intent_name_known(*, name: str) -> bool:
    """Whether `name` may be answered: an active catalog intent (the fallback catalog's when the database
    has none), or out_of_scope."""
    if name == OUT_OF_SCOPE:
        return True
    active = IntentCategory.objects.filter(is_active=True)
    if active.filter(name=name).exists():
        return True
    return not active.exists() and FALLBACK_CATALOG.get(name) is not None


def dead_letters_count() -> int:
    """How many detections and feedbacks could not be logged to MLflow and wait as dead letters. A plain
    interface for other apps (analytics' health reads it by dotted path, without importing intent's models)."""
    return (DetectionRecord.objects.filter(state=DetectionRecord.State.DEAD).count()
            + DetectionFeedback.objects.filter(state=DetectionFeedback.State.DEAD).count())


def tracking_backlog() -> dict:
    """The detection records waiting to be logged to MLflow: how many, and since when the oldest waits (a plain
    interface, read by analytics' health by dotted path)."""
    pending = DetectionRecord.objects.filter(state=DetectionRecord.State.PENDING)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    return {"pending": pending.count(), "oldest_pending_at": oldest}


def lm_circuits_state() -> list[dict]:
    """The circuit breaker of each LM this process has called, as plain dicts (analytics' health reads it by
    dotted path). Each process has its own breakers: this is the state of the one that answers."""
    now = timezone.now()
    return [
        {
            "lm": circuit["lm"],
            "api_base": uri_display(circuit["api_base"]) if circuit["api_base"] else None,
            "state": circuit["state"],
            "consecutive_failures": circuit["consecutive_failures"],
            "failure_rate": circuit["failure_rate"],
            "calls_in_window": circuit["calls_in_window"],
            "opened_at": None if circuit["opened_s_ago"] is None else
            (now - timedelta(seconds=circuit["opened_s_ago"])).isoformat(),
            "open_until": None if circuit["open_for_s"] is None else
            (now + timedelta(seconds=circuit["open_for_s"])).isoformat(),
            "probes": circuit["probes"],
            "times_opened": circuit["times_opened"],
        }
        for circuit in circuits_state()
    ]
