"""The tracking contract is defined once (`intentsite.contract`): what the intent app writes, the mirror reads."""

from __future__ import annotations

import pytest

from analytics.checks import mirror_columns_check
from analytics.models import MirroredRun
from intentsite import contract

SOURCES = {"tags": contract.TAG, "params": contract.PARAM, "metrics": contract.METRIC}


@pytest.mark.django_db
def test_every_name_a_detection_run_carries_is_a_contract_field_of_its_source(api_client, small_catalog):
    from intent.models import DetectionRecord

    api_client.post("/api/intent/detect", {"message": "what is my balance", "user_role": "customer"}, format="json")
    payload = DetectionRecord.objects.get().payload
    for key, source in SOURCES.items():
        for name in payload[key]:
            assert name in contract.BY_NAME and contract.BY_NAME[name].source == source, (key, name)


def test_the_mirror_has_a_typed_column_for_every_field_that_asks_for_one():
    assert mirror_columns_check() == []
    typed = {field.name for field in contract.FIELDS if field.column}
    assert typed <= {field.name for field in MirroredRun._meta.fields}


def test_a_missing_column_is_named_by_the_check(monkeypatch):
    extra = contract.Field("toxicity", contract.METRIC, "real", column=True)
    monkeypatch.setattr(contract, "FIELDS", (*contract.FIELDS, extra))
    (error,) = mirror_columns_check()
    assert error.id == "analytics.E001" and "toxicity" in error.msg
