"""Seeing why a detection went wrong: each detection's stored detail (the message redacted, the context, the local
model's ranking), the review queue that hands reviewers the detections worth labelling, and their retention.

- `details`: builds a detection's `DetectionDetail` (written with its record, on the request path);
- `selectors`: the review queue's strategies, and the unbiased accuracy of labels on random samples;
- `apis`: `GET /api/intent/review-queue/`;
- `retention`: erasing stored text and old details (`purge_expired_data`).
"""
