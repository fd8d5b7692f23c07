"""The domain-error family, and the one place that turns errors into HTTP answers (no request ends in an HTML 500).

Services raise a `DomainError` subclass in the domain's words (`DetectionNotFound(NotFound)`); views do not catch
them: `api_exception_handler` answers each with its status and `{"detail": <message>}`. Input errors are not
here: every 400 about a field comes from a serializer.
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait (Retry-After) when the database cannot be reached.
DATABASE_RETRY_AFTER_S = 5


class DomainError(Exception):
    """A service cannot do what it was asked, for a reason of the domain (not a bug). Subclass a member below."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request cannot be carried out."


class NotFound(DomainError):
    """The thing asked about does not exist (or the asker may not know it does)."""

    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "Not found."


class Conflict(DomainError):
    """The request is understood but the current state does not allow it (no saved program, a sync running)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The current state does not allow this."


class Unavailable(DomainError):
    """A service this one depends on cannot be reached now (MLflow down); worth trying again later."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service it needs cannot be reached right now; try again later."

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # sent as Retry-After when known


class UpstreamRefused(DomainError):
    """A service this one depends on answered, and refused the operation (MLflow rejected it): retrying as is
    will not help."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "A service it depends on refused the operation."


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


def _api_exception(exc: DomainError) -> APIException:
    """The DRF exception answering a domain error: its status, its message as `detail`, Retry-After if known."""
    answer = APIException(str(exc) or exc.default_detail)
    answer.status_code = exc.status_code
    retry_after_s = getattr(exc, "retry_after_s", None)
    if retry_after_s is not None:
        answer.wait = max(1, round(retry_after_s))  # DRF's handler sends it as Retry-After (whole seconds)
    return answer


def api_exception_handler(exc, context):
    # Imported here: rest_framework.views reads the parser setting, and our parser imports this module.
    from rest_framework.views import exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"Request body is too large: {exc}")
    elif isinstance(exc, (OperationalError, InterfaceError)):  # the database gone (a bug is another DatabaseError)
        logger.warning("Database unavailable in %s: %s", context.get("view"), exc)
        exc = _api_exception(Unavailable(
            "The database cannot be reached right now: nothing was done or recorded. Try again shortly.",
            retry_after_s=DATABASE_RETRY_AFTER_S))
    elif isinstance(exc, DomainError):
        exc = _api_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response(
            {"detail": "Internal error; it has been logged."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    return response
