"""gunicorn's settings for this project, read from the working directory (`make demo`, the tests' web tier)."""

# The longest request line the OpenAPI schema allows must get through: a report with every filter at its longest
# (analytics/reports/serializers.py, in 4-byte UTF-8 characters, percent-encoded: about 5.8 KB). gunicorn's default
# is 4,094 bytes (it answered an HTML 400 the schema does not know); 8,190 is its largest bounded value.
limit_request_line = 8190
