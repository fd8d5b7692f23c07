"""The reviewers' pages in a real headless Chromium: the labelling page walks the review queue with the keyboard
(an alternative's number, Enter) and its labels land as feedback; a detection's story shows its message, ranking
and labels with their author."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from intent.models import DetectionDetail, DetectionFeedback
from tests.browser import staff_session, wait_dataset

MESSAGES = ["what is my bank balance", "transfer 50 dollars to my savings account", "how do i pay my electricity bill"]


def wait_state(driver, predicate, message: str) -> dict:
    """The labelling page's state (`#review`'s dataset) once `predicate` holds of it."""
    return wait_dataset(driver, "review", predicate, message)


def test_labelling_with_the_keyboard_saves_feedback_and_brings_the_next(
        transactional_db, live_server, browser, django_user_model, api_client, small_catalog):
    for message in MESSAGES:
        assert api_client.post("/api/intent/detect", {"message": message, "current_module": "banking"},
                               format="json").status_code == 200
    staff_session(live_server, browser, django_user_model, username="rhea")
    django_user_model.objects.get(username="rhea").user_permissions.add(
        Permission.objects.get(codename="label_detections"))
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}{reverse('admin:intent_detectiondetail_review')}?strategy=uncertain")
    first = wait_state(browser, lambda s: s.get("state") == "ready", "the first item")
    detail = DetectionDetail.objects.get(request_id=first["requestId"])
    assert detail.margin == min(d.margin for d in DetectionDetail.objects.all())  # uncertain: smallest margin first
    assert browser.find_element(By.ID, "review-message").text == detail.message

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("2")  # the second alternative ...
    body.send_keys("\n")  # ... saved with Enter
    second = wait_state(browser, lambda s: s.get("labelled") == "1" and s.get("state") == "ready", "the next item")
    assert second["requestId"] != first["requestId"]
    feedback = DetectionFeedback.objects.get(request_id=first["requestId"])
    assert feedback.expected_intent == detail.alternatives[1][0] and feedback.user.username == "rhea"

    body.send_keys("\n")  # nothing picked: Enter confirms the detected intent
    wait_state(browser, lambda s: s.get("labelled") == "2", "the second label")
    confirmed = DetectionFeedback.objects.get(request_id=second["requestId"])
    assert confirmed.is_correct is True

    # the story of the first one: its message, its ranking, its label by its author
    browser.get(f"{live_server.url}{reverse('admin:intent_detectiondetail_change', args=[detail.pk])}")
    page = browser.find_element(By.TAG_NAME, "body").text
    assert detail.message in page and detail.alternatives[0][0] in page
    assert "local_model" in page and "template_match" in page  # the trace's spans, from the tracking record
    assert f"rhea · {detail.alternatives[1][0]}" in page


def test_the_labelling_page_needs_the_label_permission(transactional_db, live_server, browser, django_user_model):
    staff_session(live_server, browser, django_user_model, username="stan")
    browser.get(f"{live_server.url}{reverse('admin:intent_detectiondetail_review')}")
    assert "403" in browser.title or "Forbidden" in browser.page_source


# The drill-down's period is UTC instants, not bare dates (which the admin's filter takes as naive datetimes): a
# naive one is an error here, in the live server's thread too (the filters are the process's).
@pytest.mark.filterwarnings("error:DateTimeField .* received a naive datetime:RuntimeWarning")
def test_the_dashboard_draws_calibration_and_drills_down_to_the_detections(
        transactional_db, live_server, browser, django_user_model, api_client, small_catalog, mlflow_store):
    from selenium.webdriver.common.by import By

    from analytics.mirror.sync import runs_sync
    from intent.services import detection_feedback_log, detection_records_log

    bodies = [api_client.post("/api/intent/detect", {"message": m}, format="json").json() for m in MESSAGES]
    request_ids = [body["request_id"] for body in bodies]
    detection_records_log(request_ids=request_ids)
    for body in bodies:  # all confirmed but the last, corrected
        intent = body["intent"] if body is not bodies[-1] else next(
            i["name"] for i in small_catalog["intents"] if i["name"] != body["intent"])
        assert api_client.post("/api/intent/feedback", {"request_id": body["request_id"], "correct_intent": intent},
                               format="json").status_code == 202
    detection_feedback_log(request_ids=request_ids)
    runs_sync()
    staff_session(live_server, browser, django_user_model, username="ana")
    django_user_model.objects.get(username="ana").user_permissions.add(  # messages: a permission of their own
        Permission.objects.get(codename="view_detectiondetail"))
    browser.get(f"{live_server.url}/admin/analytics/detectionanalytics/?days=7")
    wait_dataset(browser, "analytics-dashboard", lambda s: s.get("calibration") == "ready", "the calibration")

    drawn = browser.execute_script("return Chart.getChart(document.getElementById('chart-calibration')).data"
                                   ".datasets[0].data")
    from django.test import Client

    staff = Client()
    staff.force_login(django_user_model.objects.get(username="ana"))
    (group,) = staff.get("/api/analytics/mlflow/calibration?days=7").json()["groups"]
    assert drawn == [{"x": b["mean_confidence"], "y": b["accuracy"]} for b in group["bins"] if b["runs"]]
    assert group["labelled_runs"] == 3

    # the prompt version's row opens the detections of that version
    link = browser.find_element(By.CSS_SELECTOR, "#table-prompts tbody tr a")
    assert link.text == bodies[0]["prompt_version"]
    browser.get(link.get_attribute("href"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 3
    # the list applied the period (the admin answers a filter it could not apply with the whole list and `?e=1`)
    assert "created_at__gte" in browser.current_url and "e=1" not in browser.current_url.split("?")[1].split("&")
