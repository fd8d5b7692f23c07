"""The analytics reports' edges over HTTP: bad parameters (each a 400 naming it), the limits of a period, the
permission matrix, and every answer checked against the OpenAPI schema that documents it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from tests.analytics.test_reports_api import (  # noqa: F401 - known_runs is a fixture
    BASE,
    ENDPOINTS,
    GPT,
    LOCAL,
    at,
    get,
    known_runs,
    mirror,
    mirrored,
    today,
)

pytestmark = pytest.mark.django_db


# --- Bad parameters and permissions ----------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("params, field", [
    ({"days": 0}, "days"), ({"days": 366}, "days"), ({"days": "abc"}, "days"), ({"days": -3}, "days"),
    ({"days": ""}, "days"), ({"days": "1.5"}, "days"), ({"module": "m" * 201}, "module"),
    ({"user_role": "r" * 201}, "user_role"), ({"model_name": "x" * 201}, "model_name"),
    ({"prompt_version": "p" * 201}, "prompt_version"), ({"until": "tomorrow"}, "until"),
    ({"module": "m" * 101}, "module"), ({"prompt_version": "p" * 65}, "prompt_version"),
    # what the schema's pattern refuses: whitespace alone, NUL (PostgreSQL cannot store it, nor match it)
    ({"module": " "}, "module"), ({"user_role": "\t\u3000"}, "user_role"), ({"model_name": "a\x00b"}, "model_name"),
    # a number or a date written as the schema writes them (Django and Python would take more)
    ({"days": "7.0"}, "days"), ({"days": " 7"}, "days"), ({"days": "1_0"}, "days"), ({"days": "\u0667"}, "days"),
    ({"until": "2026-1-5"}, "until"), ({"until": "20260105"}, "until"), ({"until": "2026-W01-1"}, "until"),
    ({"until": ""}, "until"), ({"until": "10000-01-01"}, "until"),
    # the first day a date type knows: `since` would overflow (a 500 once); before MLflow's epoch anyway
    ({"until": "0001-01-01"}, "until"), ({"until": "1969-12-31", "days": 365}, "until"),
    # a typo names the unknown parameter instead of answering for everything
    ({"modul": "banking"}, "modul"), ({"days": 7, "moduel": "x", "limit": 3}, "moduel"),
    # present but empty is not "absent": the schema says minLength 1
    ({"user_role": ""}, "user_role"), ({"module": ""}, "module"),
])
def test_a_bad_parameter_is_a_400_naming_it(staff_client, endpoint, params, field):
    response = staff_client.get(BASE + endpoint, params)
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_until_at_mlflows_epoch_is_accepted(staff_client):
    body = get(staff_client, "overview", until="1970-01-01", days=365)
    assert body["total_runs"] == 0 and body["period"]["until"] == "1970-01-01"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("filters", [{}, {"module": "banking", "model_name": LOCAL}], ids=["rollups", "raw-rows"])
@pytest.mark.usefixtures("known_runs")
def test_until_in_the_future_is_a_period_like_any_other(staff_client, endpoint, filters):
    """Up to the last day a date can be (a schema cannot say "not after tomorrow"): days to come have no runs."""
    body = get(staff_client, endpoint, until="9999-12-31", days=365, **filters)
    assert body["period"] == {"days": 365, "since": "9999-01-01", "until": "9999-12-31"}
    tomorrow = get(staff_client, "overview", until=(today() + timedelta(days=1)).isoformat(), days=2, **filters)
    assert tomorrow["total_runs"] == (1 if filters else 3)  # today's runs (r1, or r1 to r3)


def test_report_in_an_unknown_format_is_a_400_naming_the_choices(staff_client):
    response = staff_client.get(BASE + "report", {"format": "xml"})
    assert response.status_code == 400
    assert response.json() == {"format": ['"xml" is not a valid choice.']}
    assert staff_client.get(BASE + "report", {"format": "json"}).status_code == 200
    assert staff_client.get(BASE + "overview", {"format": "json"}).json() == {"format": ["Unknown field."]}


@pytest.mark.usefixtures("known_runs")
def test_days_at_the_limits_are_accepted(staff_client):
    assert get(staff_client, "trends", days=1)["period"]["days"] == 1
    assert len(get(staff_client, "trends", days=365)["days"]) == 365


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_permission_matrix(endpoint, django_user_model, anonymous_client, api_client, staff_client):
    assert anonymous_client.get(BASE + endpoint).status_code == 401
    assert api_client.get(BASE + endpoint).status_code == 403  # authenticated, not staff
    assert staff_client.get(BASE + endpoint).status_code == 200
    root = django_user_model.objects.create_superuser(username="root", password="pw-root-12345")
    session = APIClient()
    session.force_login(root)  # session authentication works too
    assert session.get(BASE + endpoint).status_code == 200


def test_the_schema_describes_every_endpoint_with_examples(anonymous_client):
    response = anonymous_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    for endpoint in ENDPOINTS:
        operation = schema["paths"][BASE + endpoint]["get"]
        content = operation["responses"]["200"]["content"]["application/json"]
        assert content["examples"], endpoint
        assert "400" in operation["responses"]
        assert {param["name"] for param in operation["parameters"]} >= {"days", "module", "user_role", "model_name",
                                                                         "prompt_version"}
    overview = schema["paths"][BASE + "overview"]["get"]
    days = next(param for param in overview["parameters"] if param["name"] == "days")
    assert (days["schema"]["minimum"], days["schema"]["maximum"], days["schema"]["default"]) == (1, 365, 7)


@pytest.fixture
def evaluated(known_runs, settings):  # noqa: F811 - the fixture imported above
    """v2's latest offline evaluation (contract C), mirrored from the evaluation experiment."""
    metrics = {"in_scope_accuracy": 0.9, "oos_recall": 0.5, "macro_f1": 0.8, "latency_p50_ms": 0.05, "examples": 50.0}
    mirror([mirrored("e1", start=at(1, 12), experiment_id="2", prompt_version="v2", metrics=metrics,
                     tags={"run_kind": "evaluation"})],
           experiment_name=settings.ANALYTICS_EVALUATION_EXPERIMENT_NAME, experiment_id="2")


@pytest.mark.parametrize("params", [
    {}, {"days": 30}, {"module": "banking"}, {"model_name": GPT, "module": "banking"}, {"user_role": "agent"},
    {"days": 1, "until": (today() - timedelta(days=2)).isoformat()}, {"until": "9999-12-31"},
], ids=["default", "30-days", "one-filter", "two-filters", "folded-or-not", "empty-day", "future"])
def test_every_answer_is_what_the_schema_documents(staff_client, api_client, anonymous_client, evaluated, settings,
                                                   params):
    """Each report's real answer (with data: failures, fallbacks, labels, an evaluation, links) validated against
    the OpenAPI schema's description of it, and so are its errors."""
    from tests.openapi import AnswerChecker

    settings.MLFLOW_UI_URL = "http://mlflow.example:5000"
    check = AnswerChecker(anonymous_client)
    for endpoint in ENDPOINTS:
        path = BASE + endpoint
        answer = staff_client.get(path, params)
        assert answer.status_code == 200, answer.content
        check(answer, path=path)
        for response in (staff_client.get(path, params | {"days": 0}), api_client.get(path, params),
                         anonymous_client.get(path, params)):
            check(response, path=path)
    check(staff_client.get(BASE + "report", params | {"format": "csv"}), path=BASE + "report")
    versions = staff_client.get(BASE + "prompt-analysis", {"days": 30}).json()["versions"]
    assert [row["evaluation"]["run_id"] for row in versions if row["evaluation"]] == ["e1"]  # (checked above)


@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_during_the_reports_rollup_reads_is_a_503(staff_client, known_runs):  # noqa: F811
    """The rollup reads go out at once (on PostgreSQL in one pipeline, on their own cursors): the database going away
    under them is Django's OperationalError, so the API's 503 that says so, not a 500."""
    from django.db import OperationalError, close_old_connections, connection

    def connection_lost(execute, sql, params, many, context):
        if sql.startswith("SELECT dimension, value, day"):
            if connection.vendor != "postgresql":
                raise OperationalError("disk I/O error")
            import psycopg

            settings = connection.get_connection_params()
            with psycopg.connect(autocommit=True, **{key: settings[key] for key in ("host", "port", "user", "dbname")
                                                      if settings.get(key)}) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(connection_lost):
        response = staff_client.get(BASE + "report")
    assert response.status_code == 503, response.content
    assert "database" in response.json()["detail"].lower()
    close_old_connections()  # what the server does when a request finishes: a connection that failed is dropped
    assert staff_client.get(BASE + "report").status_code == 200  # and the next request connects again
