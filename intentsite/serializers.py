"""Serializer plumbing shared by the apps' APIs: strict types, and no field or query parameter left unnoticed."""

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
        super().__init__(required=False, min_length=1, **kwargs)

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)
