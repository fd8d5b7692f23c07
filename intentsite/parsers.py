"""A JSON parser that refuses bodies larger than DATA_UPLOAD_MAX_MEMORY_SIZE with 413.

DRF reads the request stream itself, so Django's own upload limit never applies to JSON bodies.
"""

from django.conf import settings
from rest_framework.parsers import JSONParser

from .exceptions import PayloadTooLarge


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request is not None and limit is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                raise PayloadTooLarge(f"Request body is too large: {length} bytes; the limit is {limit} bytes.")
        return super().parse(stream, media_type, parser_context)
