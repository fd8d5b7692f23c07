"""The domain-error family reaches HTTP through the one exception handler: its status, its message, Retry-After."""

from __future__ import annotations

import pytest

from intentsite.exceptions import (
    Conflict,
    DomainError,
    NotFound,
    Unavailable,
    UpstreamRefused,
    api_exception_handler,
)


@pytest.mark.parametrize(("error", "status"), [
    (DomainError("refused"), 400), (NotFound("no such thing"), 404), (Conflict("not now"), 409),
    (UpstreamRefused("MLflow refused it"), 502), (Unavailable("MLflow is down"), 503),
])
def test_each_domain_error_is_answered_with_its_status_and_message(error, status):
    response = api_exception_handler(error, {"view": None})

    assert response.status_code == status
    assert response.data == {"detail": str(error)}
    assert "Retry-After" not in response


def test_unavailable_says_when_to_retry_when_it_knows():
    response = api_exception_handler(Unavailable("MLflow is down", retry_after_s=29.6), {"view": None})

    assert response.status_code == 503
    assert response["Retry-After"] == "30"


def test_an_error_without_a_message_gets_its_class_default():
    response = api_exception_handler(NotFound(), {"view": None})

    assert response.data == {"detail": NotFound.default_detail}


@pytest.mark.django_db(transaction=True)
def test_a_detection_while_the_database_refuses_connections_is_a_json_503_with_retry_after(api_client):
    """The database refusing connections (the driver's own error, raised where Django connects) is a 503 that says
    nothing was recorded, not a 500."""
    from django.db import OperationalError, connection

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused (the database is down)")

    original = connection.get_new_connection
    connection.close()
    connection.get_new_connection = refuse
    try:
        response = api_client.post("/api/intent/detect", {"message": "what is my balance"}, format="json")
    finally:
        connection.get_new_connection = original
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "nothing was done or recorded" in response.json()["detail"]
