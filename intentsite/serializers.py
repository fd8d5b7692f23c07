"""Serializer plumbing shared by the apps' APIs: strict types, no field or query parameter left unnoticed, and the
error answers as the OpenAPI schema documents them (`api_schema`)."""

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.fields import empty


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo is a 400 instead of being silently ignored (and says so in the
    schema: `additionalProperties: false`)."""

    def validate(self, attrs):
        if isinstance(getattr(self, "initial_data", None), dict):  # nested ones check in to_internal_value
            self.unknown_refuse(self.initial_data)
        return attrs

    def unknown_refuse(self, data: dict) -> None:
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})


class StrictNestedSerializer(StrictSerializer):
    """A StrictSerializer used as a field of another (a list item): refuses unknown fields of its own object."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            self.unknown_refuse(data)
        return super().to_internal_value(data)


class NestedListField(serializers.ListField):
    """A list of nested objects (`child`: a StrictNestedSerializer) whose item errors come as plain messages naming the
    item ("<item> 2: weight: ..."): the 400 shape the schema documents (each field, a list of messages)."""

    item = "item"

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as error:
            detail = error.detail
            if isinstance(detail, dict):
                raise serializers.ValidationError([
                    f"{self.item} {index}: {field}: {message}" for index, errors in detail.items()
                    for field, messages in (errors.items() if isinstance(errors, dict) else [("", errors)])
                    for message in (messages if isinstance(messages, list) else [messages])]) from None
            raise


class StrictSerializerSchema(OpenApiSerializerExtension):
    """The schema says what `StrictSerializer` does: no property beyond the declared ones."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if type(self.target).__doc__ is None:
            schema.pop("description", None)  # inherited from here: not about the component
        return schema | {"additionalProperties": False}


# What Python's str.strip() removes, as a regular expression class every dialect reads alike (\s differs).
WHITESPACE = ("\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
              "\\u205f\\u3000")
NO_NUL = "^[^\\x00]*$"  # DRF refuses NUL in any string (PostgreSQL could not store it)
NOT_BLANK = f"^[^\\x00]*[^\\x00{WHITESPACE}][^\\x00]*$"  # ... and, unless blank is allowed, whitespace alone


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField turns 123 or true into text, this one answers 400. Its limits
    are those of the string as sent, as the schema says them (DRF's trims first: 4,001 characters with a leading
    space would pass a max_length of 4,000); whitespace alone is blank; trimming (the default) comes after."""

    def __init__(self, **kwargs) -> None:
        self.trim_after_validation = kwargs.pop("trim_whitespace", True)
        super().__init__(trim_whitespace=False, **kwargs)

    def run_validation(self, data=empty):
        if isinstance(data, str) and not data.strip() and not self.allow_blank:
            self.fail("blank")
        value = super().run_validation(data)
        return value.strip() if self.trim_after_validation and isinstance(value, str) else value

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    """The schema says what `StrictCharField` refuses beyond its lengths: NUL, and whitespace alone unless blank is
    allowed."""

    target_class = StrictCharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return schema | {"pattern": NO_NUL if self.target.allow_blank else NOT_BLANK}


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


class StrictBooleanField(serializers.BooleanField):
    """true or false, and only those: DRF's BooleanField also takes 0, 1, "yes", "off"... (400 here)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, and only that: DRF's IntegerField also takes "5" and 5.0 (400 here)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A finite JSON number: DRF's FloatField also takes "0.5", NaN and Infinity (400 here)."""

    default_error_messages = {"invalid": "A finite number is required."}

    def to_internal_value(self, data):
        import math

        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:  # an integer beyond any float
            self.fail("invalid")
        if not math.isfinite(value):
            self.fail("invalid")
        return super().to_internal_value(value)


class QueryCharField(StrictCharField):
    """A query parameter: absent means not given, but present and empty (`?module=`) is a 400, not "absent"
    (DRF's default for query strings), so that the schema's minLength 1 is what the server does."""

    def __init__(self, **kwargs) -> None:
        # Not trimmed: a value is matched as it is.
        super().__init__(required=False, min_length=1, trim_whitespace=False, **kwargs)

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)


INTEGER_WRITTEN = re.compile(r"[+-]?[0-9]+", re.ASCII)


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter: absent means its default; present, it must be written in ASCII digits (`n=`,
    `7.0`, ` 7` or `1_0`, which Python's int() would take, are 400s: the schema says integer)."""

    def get_value(self, dictionary):
        # An empty string is not "absent" (DRF's default for query params): it fails as a bad integer.
        return dictionary.get(self.field_name, empty)

    def to_internal_value(self, data):
        if isinstance(data, str) and not INTEGER_WRITTEN.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueryChoiceField(serializers.ChoiceField):
    """A query parameter among choices: absent means not given, present and empty (`?format=`) is a 400."""

    def __init__(self, **kwargs) -> None:
        super().__init__(required=False, **kwargs)

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
    409: "A field's value conflicts with the current state of the service: each such field with its messages.",
    415: "The body is not `application/json`.",
    429: "Too many requests of this user (or address) for this kind of operation; try again after `Retry-After`.",
    502: "MLflow refused the operation.",
    503: "A service the operation needs (MLflow) cannot be reached right now.",
}
# The statuses whose answer names the fields at fault (a 409: a field's value conflicts with the current state).
FIELD_ERRORS = (400, 409)
ERROR_HEADERS = (
    OpenApiParameter("WWW-Authenticate", str, OpenApiParameter.HEADER, response=[401], required=True,
                     description="How to authenticate: `Token` (header `Authorization: Token <key>`)."),
    OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, response=[429], required=True,
                     description="Seconds to wait before the next request of this kind."),
)


def api_schema(*, responses: Mapping[Any, Any], errors: Iterable[int | tuple[int, str]], parameters: Sequence[Any] = (),
               **kwargs: Any) -> Callable:
    """`extend_schema` with the error answers of the operation in one line: `errors=(400, 401, 403, 429)`, a
    `(status, description)` pair where the operation has more to say than `ERRORS`. Errors are JSON, whatever
    content types the operation's own answers have; a 401 comes with WWW-Authenticate, a 429 with Retry-After."""
    described = dict(error if isinstance(error, tuple) else (error, ERRORS[error]) for error in errors)
    documented = {
        (status, "application/json"): OpenApiResponse(
            FieldErrorsSerializer if status in FIELD_ERRORS else ErrorSerializer, description=description)
        for status, description in sorted(described.items())}
    headers = [header for header in ERROR_HEADERS if set(header.response) & set(described)]
    return extend_schema(responses={**responses, **documented}, parameters=[*parameters, *headers], **kwargs)
