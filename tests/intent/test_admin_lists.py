"""The detections' admin lists read at a glance: intent, 2-decimal confidence, status, model, latency, a short
request id, links to the MLflow run and the mirrored run; a record's page shows its payload and label history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from intent.models import DetectionFeedback, DetectionLabel, DetectionRecord
from tests.admin_pages import result_rows

pytestmark = pytest.mark.django_db

RECORDS = reverse("admin:intent_detectionrecord_changelist")
MLFLOW_UI = "http://mlflow.example:5000"


def payload(*, intent: str = "transfer", confidence: float = 0.9312345678901234, latency_ms: float = 12.345,
            status: str = "success", error_category: str = "", model: str = "openai/gpt-4o-mini",
            answered_by: str | None = None) -> dict:
    """A record's payload shaped as `intent.tracking.run_payload_build` writes it."""
    tags = {"detected_intent": intent, "status": status, "answered_by": answered_by or model,
            "fallback_used": str(answered_by is not None).lower(), "user_role": "customer",
            "current_module": "banking", "current_tab": "", "prompt_version": "a1b2c3d4e5f6", "dspy_version": "3"}
    if error_category:
        tags |= {"error_category": error_category, "error_type": "TimeoutError"}
    return {"start_time": 1_700_000_000_000, "end_time": 1_700_000_000_012,
            "status": "FAILED" if status == "error" else "FINISHED", "tags": tags,
            "params": {"model_name": model, "message_length": "20", "category_source": "database"},
            "metrics": {"confidence_score": confidence, "response_time_ms": latency_ms}}


def record(*, state: str = "logged", run_id: str = "", created_at: datetime | None = None, user=None,
           **payload_values) -> DetectionRecord:
    request_id = uuid.uuid4()
    return DetectionRecord.objects.create(
        request_id=request_id, created_at=created_at or timezone.now(), payload=payload(**payload_values),
        state=state, mlflow_run_id=run_id or (uuid.uuid4().hex if state == "logged" else ""), user=user,
        attempts=1 if state == "logged" else 5, last_error="" if state != "dead" else "MlflowException: boom")


def test_the_record_list_shows_intent_confidence_status_model_latency_and_a_short_id(admin_client, settings):
    settings.MLFLOW_UI_URL = ""
    # given a logged record and a fallback that was not logged yet
    logged = record(intent="transfer", confidence=0.9312345678901234, latency_ms=12.345)
    fallback = record(state="pending", intent="balance", error_category="lm_timeout",
                      answered_by="local/tfidf-linear")

    # when
    response = admin_client.get(RECORDS)
    content = response.content.decode()
    rows = {row["request_short"]: row for row in result_rows(response)}

    # then
    shown = rows[str(logged.request_id)[:8]]  # the short id, the full one in its title
    assert (shown["intent"], shown["confidence"], shown["latency"]) == ("transfer", "0.93", "12.3")
    assert (shown["status"], shown["model_answer"], shown["tracking_state"]) == (
        "success", "openai/gpt-4o-mini", "logged")
    assert f'title="{logged.request_id}"' in content and str(logged.request_id) not in shown.values()
    waiting = rows[str(fallback.request_id)[:8]]
    assert waiting["status"] == "success lm_timeout"  # with its error category (it fell back)
    assert waiting["model_answer"] == "openai/gpt-4o-mini ↳ local/tfidf-linear"  # configured, and who answered
    assert (waiting["tracking_state"], waiting["links"]) == ("pending ×5", "-")  # nothing mirrored before logging
    assert shown["links"] == "mirror"  # no MLflow UI configured, no link to it
    mirror = f'{reverse("admin:analytics_mirroredrun_changelist")}?request_id={logged.request_id}'
    assert f'href="{mirror}"' in content


def test_with_the_mlflow_ui_url_a_logged_record_links_to_its_run(admin_client, settings):
    settings.MLFLOW_UI_URL = MLFLOW_UI
    logged = record(run_id="0123456789abcdef0123456789abcdef")
    record(state="pending")

    content = admin_client.get(RECORDS).content.decode()

    assert f'href="{MLFLOW_UI}/#/runs/{logged.mlflow_run_id}"' in content
    assert content.count(f"{MLFLOW_UI}/#/runs/") == 1  # the pending record has no run yet


def test_records_sort_by_confidence_and_latency_filter_by_intent_and_search_by_short_id(admin_client):
    low = record(intent="balance", confidence=0.41, latency_ms=300.0)
    high = record(intent="transfer", confidence=0.97, latency_ms=2.0)
    middle = record(intent="transfer", confidence=0.75, latency_ms=40.0)
    columns = list(admin_client.get(RECORDS).context["cl"].list_display)

    by_confidence = admin_client.get(RECORDS, {"o": f"-{columns.index('confidence')}"})
    by_latency = admin_client.get(RECORDS, {"o": str(columns.index("latency"))})
    transfers = admin_client.get(RECORDS, {"intent": "transfer"})
    searched = admin_client.get(RECORDS, {"q": str(middle.request_id)[:8]})
    by_intent = admin_client.get(RECORDS, {"q": "balance"})

    assert [row["confidence"] for row in result_rows(by_confidence)] == ["0.97", "0.75", "0.41"]
    assert list(by_latency.context["cl"].result_list) == [high, middle, low]
    assert set(transfers.context["cl"].result_list) == {high, middle}
    assert list(searched.context["cl"].result_list) == [middle]
    assert list(by_intent.context["cl"].result_list) == [low]


def test_the_record_page_shows_who_asked_the_payload_and_the_label_history(admin_client, django_user_model):
    # given a detection asked by ann, labelled by her, then corrected by a reviewer
    ann = django_user_model.objects.create_user("ann", password="pw-ann-12345")
    rita = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    detection = record(user=ann, intent="balance")
    DetectionLabel.objects.create(request_id=detection.request_id, expected_intent="balance", is_correct=True,
                                  user=ann, comment="looks right")
    DetectionLabel.objects.create(request_id=detection.request_id, expected_intent="transfer", is_correct=False,
                                  user=rita, comment="it was a transfer")
    DetectionLabel.objects.create(request_id=uuid.uuid4(), expected_intent="pay_bill", is_correct=False, user=rita,
                                  comment="another detection")

    # when
    page = admin_client.get(reverse("admin:intent_detectionrecord_change", args=[detection.pk]))
    content = page.content.decode()

    # then
    assert page.status_code == 200 and 'name="_save"' not in content  # read-only
    assert "ann" in content.split('class="intent-labels"')[0]  # who asked, above the labels
    history = content.split('class="intent-labels"')[1].split("</table>")[0]
    assert history.index("rita") < history.index("ann")  # newest first
    assert "it was a transfer" in history and "looks right" in history and "another detection" not in history
    assert "&quot;detected_intent&quot;: &quot;balance&quot;" in content  # the payload, pretty-printed


def test_dead_letters_show_the_detection_and_the_last_error(admin_client):
    dead = record(state="dead", intent="pay_bill", confidence=0.5)
    record(state="logged", intent="transfer")

    response = admin_client.get(reverse("admin:intent_deadletter_changelist"))

    [row] = result_rows(response)
    assert (row["intent"], row["confidence"], row["error"]) == ("pay_bill", "0.50", "MlflowException: boom")
    assert row["request_short"] == str(dead.request_id)[:8]


def test_feedback_links_to_its_record_and_labels_are_listed_read_only(admin_client, django_user_model):
    rita = django_user_model.objects.create_user("rita", password="pw-rita-12345")
    sam = django_user_model.objects.create_user("sam", password="pw-sam-12345")
    detection = record(intent="balance")
    DetectionFeedback.objects.create(request_id=detection.request_id, detected_intent="balance",
                                     expected_intent="transfer", is_correct=False, user=rita, revision=2)
    old = timezone.now() - timedelta(days=1)
    right = DetectionLabel.objects.create(request_id=detection.request_id, expected_intent="balance",
                                          is_correct=True, user=sam)
    wrong = DetectionLabel.objects.create(request_id=detection.request_id, expected_intent="transfer",
                                          is_correct=False, user=rita, comment="a transfer")
    DetectionLabel.objects.filter(pk=right.pk).update(created_at=old)
    labels = reverse("admin:intent_detectionlabel_changelist")

    feedback = admin_client.get(reverse("admin:intent_detectionfeedback_changelist")).content.decode()
    listing = admin_client.get(labels)
    incorrect = admin_client.get(labels, {"is_correct__exact": "0"})
    by_sam = admin_client.get(labels, {"author": str(sam.pk)})

    assert "balance → transfer" in feedback and ">rita<" in feedback
    assert f'href="{reverse("admin:intent_detectionrecord_change", args=[detection.pk])}"' in feedback
    content = listing.content.decode()
    assert old.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") in content and "a transfer" in content
    assert f"{RECORDS}?request_id={detection.request_id}" in content
    authors = next(spec for spec in listing.context["cl"].filter_specs
                   if getattr(spec, "parameter_name", "") == "author")
    assert {label for _, label in authors.lookup_choices} == {"rita", "sam"}
    assert list(incorrect.context["cl"].result_list) == [wrong]
    assert list(by_sam.context["cl"].result_list) == [right]
    assert admin_client.get(reverse("admin:intent_detectionlabel_add")).status_code == 403
    change = admin_client.get(reverse("admin:intent_detectionlabel_change", args=[wrong.pk])).content.decode()
    assert 'name="_save"' not in change
