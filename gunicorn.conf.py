"""gunicorn's settings for this project, read from the working directory (`make demo`, the tests' web tier)."""

# The longest request line the OpenAPI schema allows must get through: a report with every filter at its longest
# (analytics/reports/serializers.py, in 4-byte UTF-8 characters, percent-encoded: about 5.8 KB). gunicorn's default
# is 4,094 bytes (it answered an HTML 400 the schema does not know); 8,190 is its largest bounded value.
limit_request_line = 8190


def post_worker_init(worker):
    """Build the detector before this worker accepts a request (`intent.detectors.detector_warm`), and import every
    view (the URLconf: ~50 ms otherwise paid by the first request). The worker tells the arbiter it is alive
    meanwhile: a first fit on a large catalog may outlast `--timeout`."""
    import threading

    from django.urls import get_resolver

    from intent.detectors import detector_warm

    warmed = threading.Event()

    def heartbeat():
        while not warmed.wait(1.0):
            worker.notify()

    threading.Thread(target=heartbeat, name="warm-heartbeat", daemon=True).start()
    try:
        get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view module
        detector_warm()
    finally:
        warmed.set()
