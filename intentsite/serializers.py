"""Serializer plumbing shared by the apps' APIs: strict types, no field or query parameter left unnoticed, and the
error answers as the OpenAPI schema documents them (`api_schema`)."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.fields import empty


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is a 400 instead of being silently ignored. On a query string
    (a `QueryDict`), `allowed_extra` names parameters some other layer reads (DRF's `format`)."""

    allowed_extra: frozenset[str] = frozenset()

    def validate(self, attrs):
        if isinstance(self.initial_data, dict):
            unknown = sorted(set(self.initial_data) - set(self.fields) - self.allowed_extra)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField turns 123 or true into text, this one answers 400."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OptionalCharField(StrictCharField):
    """An optional string: absent or null means "not given" (the default, ''); anything else must be a string."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("default", "")
        super().__init__(required=False, allow_null=True, allow_blank=True, **kwargs)

    def validate_empty_values(self, data):
        if data is None:
            return True, self.get_default()
        return super().validate_empty_values(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a string (DRF's UUIDField also takes an integer)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class QueryCharField(StrictCharField):
    """A query parameter: absent means not given, but present and empty (`?module=`) is a 400, not "absent"
    (DRF's default for query strings), so that the schema's minLength 1 is what the server does."""

    def __init__(self, **kwargs) -> None:
        # Not trimmed either: a value is matched as it is, and " " is as much a value as the schema's minLength says.
        super().__init__(required=False, min_length=1, trim_whitespace=False, **kwargs)

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)


# --- Errors, as the schema documents them ---------------------------------------------------------------

class ErrorSerializer(serializers.Serializer):
    """Every error that is not about the input's fields (DRF's own shape)."""

    class Meta:
        ref_name = "Error"

    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """A 400: each offending field (or `non_field_errors`) with its messages; `detail` alone when the body is not
    JSON. A map of names to lists, which no declared field can say: `FieldErrorsSchema` writes its schema."""

    class Meta:
        ref_name = "FieldErrors"


class FieldErrorsSchema(OpenApiSerializerExtension):
    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "Each offending input field (or `non_field_errors`) with its messages.",
            "properties": {"detail": {"type": "string", "description": "Instead of fields: the body is not JSON."}},
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        }


ERRORS: dict[int, str] = {
    400: "Invalid input: each offending field with its messages.",
    401: "No credentials, or invalid ones.",
    403: "Authenticated but not allowed (or a session request without its CSRF token).",
    404: "Not found.",
    413: "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    415: "The body is not `application/json`.",
    429: "Too many requests of this user (or address) for this kind of operation; try again after `Retry-After`.",
    502: "MLflow refused the operation.",
    503: "A service the operation needs (MLflow) cannot be reached right now.",
}
ERROR_HEADERS = (
    OpenApiParameter("WWW-Authenticate", str, OpenApiParameter.HEADER, response=[401], required=True,
                     description="How to authenticate: `Token` (header `Authorization: Token <key>`)."),
    OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, response=[429], required=True,
                     description="Seconds to wait before the next request of this kind."),
)


def api_schema(*, responses: Mapping[Any, Any], errors: Iterable[int] | Mapping[int, str],
               parameters: Sequence[Any] = (), **kwargs: Any) -> Callable:
    """`extend_schema` with the error answers of the operation in one line: `errors=(400, 401, 403, 429)`, or a
    {status: description} mapping to say more than `ERRORS` does. Errors are JSON, whatever content types the
    operation's own answers have; a 401 comes with WWW-Authenticate, a 429 with Retry-After."""
    described = dict(errors) if isinstance(errors, Mapping) else dict.fromkeys(errors, "")
    documented = {
        (status, "application/json"): OpenApiResponse(FieldErrorsSerializer if status == 400 else ErrorSerializer,
                                                      description=description or ERRORS[status])
        for status, description in sorted(described.items())}
    headers = [header for header in ERROR_HEADERS if set(header.response) & set(described)]
    return extend_schema(responses={**responses, **documented}, parameters=[*parameters, *headers], **kwargs)
