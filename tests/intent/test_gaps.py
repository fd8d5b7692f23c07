"""Template-gap mining: 30 messages about a topic the catalog lacks (pet insurance claims), sent through the detect
API among other traffic, come out as one cluster with its figures consistent; the API and the command show it; an
admin action makes an inactive intent of it; without stored messages mining says it cannot."""

from __future__ import annotations

import json
import random
from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Q
from django.urls import reverse
from rest_framework.test import APIClient

from intent.gaps.mining import Message, messages_cluster
from intent.gaps.services import gaps_mine
from intent.models import DetectionDetail, GapCluster, IntentCategory
from tests.conftest import CLINC150
from tests.gap_topics import pet_insurance_messages

pytestmark = pytest.mark.django_db
URL = "/api/analytics/mlflow/gaps"


def other_messages(rng: random.Random) -> list[str]:
    data = json.loads(CLINC150.read_text())
    return rng.sample([text for text, _ in data["oos_test"]], 40) + rng.sample([text for text, _ in data["test"]], 20)


@pytest.fixture
def traffic(api_client, small_catalog) -> list[str]:
    """30 pet insurance claims among 60 other messages (CLINC150's out-of-scope and in-scope test messages)."""
    rng = random.Random(3)
    others = other_messages(rng)
    injected = pet_insurance_messages(rng)
    messages = others + injected
    rng.shuffle(messages)
    for message in messages:
        response = api_client.post("/api/intent/detect", {"message": message}, format="json")
        assert response.status_code == 200, response.content
    return injected


@pytest.fixture
def staff(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="gil", password="pw", is_staff=True,
                                                                    is_superuser=True))
    return client


def test_the_clusterer_puts_thirty_messages_about_a_missing_topic_in_one_cluster():
    rng = random.Random(5)
    injected, others = pet_insurance_messages(rng), other_messages(rng)
    texts = others + injected
    mined = messages_cluster([Message(text=text, day=date(2026, 11, 1 + i % 20), detected_intent="out_of_scope")
                              for i, text in enumerate(texts)], min_cluster_size=8)

    pet_indexes = set(range(len(others), len(texts)))
    (pets,) = [cluster for cluster in mined.clusters if set(cluster.members) & pet_indexes]
    assert pet_indexes <= set(pets.members)  # all 30, in one cluster
    assert len(pet_indexes) / pets.size >= 0.75  # and mostly them
    assert len(set(pets.examples) & set(injected)) >= 4 and len(pets.examples) == 5  # the most central: theirs
    assert sum(pets.trend.values()) == pets.size and 30 < mined.clustered <= len(texts)  # messages with a recurring term


def test_the_mining_of_detected_traffic_finds_the_missing_topic(traffic, staff, settings):
    mining = gaps_mine(days=30)

    assert mining.detections == 90 and 30 <= mining.candidates <= 90 and mining.clustered <= mining.candidates
    # The injected messages the detector was unsure of (or found out of scope, or without a template): most of them.
    unsure = DetectionDetail.objects.filter(message__in=traffic).filter(
        Q(detected_intent="out_of_scope") | Q(template_matched=False) | Q(confidence__lt=settings.GAPS_LOW_CONFIDENCE))
    assert unsure.count() >= 25
    clusters = list(mining.clusters.order_by("rank"))
    (pets,) = [cluster for cluster in clusters if len(set(cluster.examples) & set(traffic)) >= 3]
    report = staff.get(URL, {"days": 30}).json()
    (shown,) = [c for c in report["clusters"] if c["id"] == pets.pk]
    assert pets.size >= unsure.count() and len(set(pets.examples) & set(traffic)) >= 4 and len(pets.examples) == 5
    assert {"insurance", "pet", "claim"} & set(" ".join(pets.top_terms).split())
    assert any(word in pets.suggested_name for word in ("insurance", "pet", "claim"))
    assert pets.share == pytest.approx(pets.size / mining.candidates)
    assert sum(day["count"] for day in pets.trend) == pets.size
    assert sum(item["count"] for item in pets.detected_intents) <= pets.size
    assert shown["size"] == pets.size and shown["examples"] == pets.examples and report["available"] is True
    assert report["mining"]["candidates"] == mining.candidates
    assert [c["rank"] for c in report["clusters"]] == list(range(1, len(clusters) + 1))
    assert [c["size"] for c in report["clusters"]] == sorted((c["size"] for c in report["clusters"]), reverse=True)


def test_an_admin_action_makes_an_inactive_intent_of_a_cluster(traffic, staff, client, django_user_model):
    mining = gaps_mine(days=30)
    cluster = mining.clusters.order_by("rank").first()
    admin = django_user_model.objects.create_superuser(username="ada", password="pw-ada-12345")
    client.force_login(admin)
    url = reverse("admin:intent_gapcluster_changelist")

    response = client.post(url, {"action": "adopt", "_selected_action": [cluster.pk]}, follow=True)
    assert "inactive" in response.content.decode()
    cluster.refresh_from_db()
    category = IntentCategory.objects.get(pk=cluster.adopted_as_id)
    assert category.is_active is False and category.name.startswith(cluster.suggested_name[:20])
    assert sorted(example.text for example in category.examples.all()) == sorted(cluster.examples)
    again = client.post(url, {"action": "adopt", "_selected_action": [cluster.pk]}, follow=True)
    assert "already" in again.content.decode() and IntentCategory.objects.filter(pk=category.pk).count() == 1
    assert staff.get(URL, {"days": 30}).json()["clusters"][0]["adopted_as"] == category.name
    for page in (url, reverse("admin:intent_gapmining_change", args=[mining.pk])):
        assert client.get(page).status_code == 200


def test_the_command_prints_the_clusters(traffic):
    out = StringIO()
    call_command("mine_gaps", "--days", "7", stdout=out)
    assert "candidate messages of 90 in 7 days" in out.getvalue()
    assert GapCluster.objects.filter(mining__days=7).exists()


def test_without_stored_messages_mining_says_it_cannot(api_client, small_catalog, staff, settings):
    settings.INTENT_STORE_MESSAGES = False
    api_client.post("/api/intent/detect", {"message": "file a claim for my dog's vet bill"}, format="json")
    body = staff.get(URL).json()
    assert body["available"] is False and "INTENT_STORE_MESSAGES" in body["reason"] and body["clusters"] == []
    with pytest.raises(CommandError, match="INTENT_STORE_MESSAGES"):
        call_command("mine_gaps")


def test_gap_endpoints_check_their_input_and_who_asks(staff, api_client, anonymous_client, django_user_model):
    assert staff.get(URL).json() == {"available": True, "reason": "", "mining": None, "clusters": []}
    for params in ({"days": 0}, {"days": 91}, {"days": "x"}, {"day": 3}):
        assert staff.get(URL, params).status_code == 400, params
    assert anonymous_client.get(URL).status_code == 401 and api_client.get(URL).status_code == 403
    plain_staff = APIClient()  # staff, but not allowed to read messages
    plain_staff.force_authenticate(django_user_model.objects.create_user(username="sid", password="pw", is_staff=True))
    refused = plain_staff.get(URL)
    assert refused.status_code == 403 and "view_detectiondetail" in refused.json()["detail"]
    assert staff.post(f"{URL}/mine", {"days": 0}, format="json").status_code == 400
    queued = staff.post(f"{URL}/mine", {"days": 14}, format="json")
    assert queued.status_code == 202 and queued.json() == {"queued": True, "days": 14}
    again = staff.post(f"{URL}/mine", {"days": 14}, format="json")  # one mining of a period at a time
    assert again.status_code == 202 and again.json() == {"queued": False, "days": 14}
    assert api_client.post(f"{URL}/mine", {}, format="json").status_code == 403
