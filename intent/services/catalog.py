"""Loading an intent catalog into the database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from intentsite.exceptions import DomainError

from ..models import AgentTemplate, IntentCategory, IntentExample, WorkflowTemplate


class CatalogFormatError(DomainError):
    """The catalog file is not in a format this loader knows, or is inconsistent."""


# --- Catalog loading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogLoadResult:
    categories_created: int
    categories_updated: int
    categories_deactivated: int
    examples: int
    workflow_templates: int
    agent_templates: int


def catalog_read(*, path: Path, templates_path: Path | None = None) -> dict[str, Any]:
    """Read a catalog file into the loader's own format.

    Two formats are accepted: intentsite's own (`{"intents": [{"name", "module", "examples", ...}],
    "workflow_templates": [...], "agent_templates": [...]}`) and CLINC150's `data_full.json` (its
    `train` split; the modules come from `domains.json` beside it).
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogFormatError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise CatalogFormatError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict) and "intents" in raw:
        catalog = raw
    elif isinstance(raw, dict) and "train" in raw:
        catalog = _clinc150_catalog(raw, Path(path).parent / "domains.json")
    else:
        raise CatalogFormatError(f"{path}: expected an object with 'intents' (intentsite) or 'train' (CLINC150)")
    if templates_path is not None:
        templates = json.loads(Path(templates_path).read_text(encoding="utf-8"))
        catalog["workflow_templates"] = templates.get("workflow_templates", [])
        catalog["agent_templates"] = templates.get("agent_templates", [])
    return catalog


def _clinc150_catalog(raw: dict[str, Any], domains_path: Path) -> dict[str, Any]:
    if not domains_path.exists():
        raise CatalogFormatError(f"CLINC150 needs {domains_path} to map intents to domains (modules)")
    domains: dict[str, list[str]] = json.loads(domains_path.read_text(encoding="utf-8"))
    module_of = {intent: domain for domain, intents in domains.items() for intent in intents}
    examples: dict[str, list[str]] = {}
    for line, pair in enumerate(raw["train"], start=1):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise CatalogFormatError(f"CLINC150 train item {line}: expected [text, intent], got {pair!r}")
        text, intent = pair
        examples.setdefault(intent, []).append(text)
    unknown = sorted(set(examples) - set(module_of))
    if unknown:
        raise CatalogFormatError(f"CLINC150 intents without a domain in {domains_path}: {unknown[:5]}")
    return {
        "intents": [
            {
                "name": intent,
                "module": module_of[intent],
                "description": f"{intent.replace('_', ' ').capitalize()} ({module_of[intent].replace('_', ' ')}).",
                "examples": texts,
            }
            for intent, texts in sorted(examples.items())
        ]
    }


@transaction.atomic
def catalog_load(*, catalog: dict[str, Any], replace: bool = False) -> CatalogLoadResult:
    """Upsert a catalog (idempotent). `replace=True` deactivates categories and templates not in it."""
    intents = catalog.get("intents") or []
    if not intents:
        raise CatalogFormatError("The catalog has no intents")
    workflow_intents = {
        name for template in catalog.get("workflow_templates", []) for name in template.get("intents", [])
    }
    existing = {category.name: category for category in IntentCategory.objects.all()}
    created = updated = 0
    for item in intents:
        name = item["name"]
        fields = {
            "description": item.get("description", ""),
            "module": item.get("module", ""),
            "requires_workflow": bool(item.get("requires_workflow", name in workflow_intents)),
            "is_active": bool(item.get("is_active", True)),
        }
        category = existing.get(name)
        if category is None:
            category = IntentCategory.objects.create(name=name, **fields)
            existing[name] = category
            created += 1
        elif any(getattr(category, key) != value for key, value in fields.items()):
            for key, value in fields.items():
                setattr(category, key, value)
            category.save()
            updated += 1
        texts = list(item.get("examples", []))
        current = list(category.examples.order_by("id").values_list("text", flat=True))
        if current != texts:
            category.examples.all().delete()
            IntentExample.objects.bulk_create(
                [IntentExample(category=category, text=text) for text in texts], batch_size=500
            )
    deactivated = 0
    names = {item["name"] for item in intents}
    if replace:
        deactivated = IntentCategory.objects.filter(is_active=True).exclude(name__in=names).update(
            is_active=False, updated_at=timezone.now()
        )
    counts = {}
    for key, model in (("workflow_templates", WorkflowTemplate), ("agent_templates", AgentTemplate)):
        counts[key] = _templates_load(model, catalog.get(key, []), existing, replace=replace)
    return CatalogLoadResult(
        categories_created=created,
        categories_updated=updated,
        categories_deactivated=deactivated,
        examples=IntentExample.objects.filter(category__name__in=names).count(),
        workflow_templates=counts["workflow_templates"],
        agent_templates=counts["agent_templates"],
    )


def _templates_load(model, items: list[dict[str, Any]], categories: dict[str, IntentCategory], *, replace: bool) -> int:
    for item in items:
        missing = [name for name in item.get("intents", []) if name not in categories]
        if missing:
            raise CatalogFormatError(f"Template {item['name']!r} names unknown intents: {missing}")
        template, _ = model.objects.update_or_create(
            name=item["name"],
            defaults={
                "description": item.get("description", ""),
                "module": item.get("module", ""),
                "trigger_examples": list(item.get("trigger_examples", [])),
                "is_active": bool(item.get("is_active", True)),
            },
        )
        template.intents.set([categories[name] for name in item.get("intents", [])])
    if replace:
        model.objects.filter(is_active=True).exclude(name__in=[i["name"] for i in items]).update(
            is_active=False, updated_at=timezone.now()
        )
    return len(items)
