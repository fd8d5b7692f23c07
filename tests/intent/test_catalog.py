"""Loading the catalog: the shipped CLINC150 demo catalog, idempotence, templates, bad files."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from intent.models import AgentTemplate, IntentCategory, IntentExample, WorkflowTemplate
from intent.selectors import catalog_fingerprint, catalog_get

pytestmark = pytest.mark.django_db


def test_clinc150_demo_catalog_loads_and_is_idempotent(capsys, clinc150, clinc_domains):
    call_command("load_intent_catalog", "--no-fit")
    first = capsys.readouterr().out
    assert "150 categories created" in first
    assert IntentCategory.objects.count() == 150
    assert IntentExample.objects.count() == len(clinc150["train"])
    assert set(IntentCategory.objects.values_list("module", flat=True)) == set(clinc_domains)
    transfer = IntentCategory.objects.get(name="transfer")
    assert transfer.module == "banking"
    assert transfer.requires_workflow is True  # selected by the money_transfer workflow
    assert IntentCategory.objects.get(name="balance").requires_workflow is False
    assert WorkflowTemplate.objects.get(name="money_transfer").intents.filter(name="transfer").exists()
    assert AgentTemplate.objects.filter(is_active=True).count() >= 5
    examples_before = list(IntentExample.objects.order_by("id").values_list("id", flat=True)[:50])

    call_command("load_intent_catalog", "--no-fit")
    second = capsys.readouterr().out
    assert "0 categories created, 0 updated" in second
    assert IntentCategory.objects.count() == 150
    assert list(IntentExample.objects.order_by("id").values_list("id", flat=True)[:50]) == examples_before

    catalog = catalog_get()
    assert catalog.source == "database"
    assert len(catalog.intents) == 150
    assert catalog.templates_for("transfer") == ("money_transfer", None)


def test_replace_deactivates_what_the_file_no_longer_has(tmp_path, small_catalog):
    smaller = dict(small_catalog, intents=small_catalog["intents"][:3], workflow_templates=[], agent_templates=[])
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(smaller))
    call_command("load_intent_catalog", "--file", str(path), "--replace", "--no-fit")
    assert IntentCategory.objects.filter(is_active=True).count() == 3
    assert not WorkflowTemplate.objects.filter(is_active=True).exists()
    assert len(catalog_get().intents) == 3


def test_fingerprint_changes_with_the_catalog(small_catalog):
    before = catalog_fingerprint()
    assert catalog_fingerprint() == before
    category = IntentCategory.objects.get(name="transfer")
    category.examples.create(text="wire money to my brother")
    assert catalog_fingerprint() != before


def test_catalog_version_is_a_content_hash(small_catalog):
    first = catalog_get().version
    assert catalog_get().version == first
    IntentCategory.objects.filter(name="transfer").update(description="Send money somewhere else.")
    assert catalog_get().version != first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"something": []}', "expected an object with 'intents'"),
        ('{"intents": []}', "has no intents"),
        ('{"intents": [{"name": "a", "examples": ["x"]}], "workflow_templates": '
         '[{"name": "w", "intents": ["missing"]}]}', "unknown intents"),
    ],
)
def test_bad_catalog_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("load_intent_catalog", "--file", str(path), "--no-fit")
    assert IntentCategory.objects.count() == 0  # nothing half-loaded


def test_missing_catalog_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("load_intent_catalog", "--file", str(tmp_path / "nope.json"), "--no-fit")
