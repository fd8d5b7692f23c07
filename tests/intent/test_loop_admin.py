"""The admin shows feedback (with a replay of dead ones) and activates a saved prompt version."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from intent.models import DetectionFeedback, PromptVersion

pytestmark = pytest.mark.django_db


def test_feedback_is_listed_searched_and_read_only(admin_client):
    request_id = uuid.uuid4()
    DetectionFeedback.objects.create(request_id=request_id, detected_intent="balance", expected_intent="transfer",
                                     is_correct=False, comment="wanted a transfer")
    url = reverse("admin:intent_detectionfeedback_changelist")
    page = admin_client.get(url, {"q": "transfer"})
    assert page.status_code == 200
    assert str(request_id) in page.content.decode()
    assert admin_client.get(url, {"q": "nothing-like-this"}).content.decode().count(str(request_id)) == 0
    assert admin_client.get(reverse("admin:intent_detectionfeedback_add")).status_code == 403


def test_dead_feedback_replay_action(admin_client, settings, mlflow_store):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the action's own work is under test, not the worker's
    feedback = DetectionFeedback.objects.create(request_id=uuid.uuid4(), detected_intent="balance",
                                                expected_intent="balance", is_correct=True, state="dead")
    response = admin_client.post(reverse("admin:intent_detectionfeedback_changelist"),
                                 {"action": "replay", "_selected_action": [feedback.pk]}, follow=True)
    assert "Replayed 1 dead feedback(s)." in response.content.decode()
    feedback.refresh_from_db()
    assert feedback.state == "pending"  # back in the queue; its detection has no run yet, so it waits


def test_activate_action(admin_client, tmp_path):
    saved = tmp_path / "abc123.json"
    saved.write_text("{}")
    with_program = PromptVersion.objects.create(version="abc123", model_name="m", description={},
                                                program_path=str(saved))
    without = PromptVersion.objects.create(version="def456", model_name="m", description={})
    url = reverse("admin:intent_promptversion_changelist")
    response = admin_client.post(url, {"action": "activate", "_selected_action": [without.pk]}, follow=True)
    assert "has no saved program" in response.content.decode()
    response = admin_client.post(url, {"action": "activate", "_selected_action": [with_program.pk]}, follow=True)
    assert "Prompt version abc123 is active." in response.content.decode()
    assert list(PromptVersion.objects.filter(is_active=True).values_list("version", flat=True)) == ["abc123"]
    admin_client.post(url, {"action": "deactivate", "_selected_action": [with_program.pk]}, follow=True)
    assert not PromptVersion.objects.filter(is_active=True).exists()
