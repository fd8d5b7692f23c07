"""Examples of the reports' answers in the OpenAPI schema (a week of a demo-like month)."""

from drf_spectacular.utils import OpenApiExample

HEADER_EXAMPLE = {"period": {"days": 7, "since": "2026-11-20", "until": "2026-11-26"}, "filters": {}}
OVERVIEW_EXAMPLE = {
    "total_runs": 1200, "success_rate": 0.9875, "error_rate": 0.0125, "avg_confidence": 0.8123,
    "response_time_ms": {"avg": 212.4, "p50": 1.214, "p95": 1021.8, "p99": 2154.3},
    "template_match_rate": 0.41, "out_of_scope_rate": 0.0825, "fallback_rate": 0.02,
    "tokens": {"prompt": 84210, "completion": 9120, "total": 93330}, "cost_usd": 0.0291,
    "labelled_runs": 40, "accuracy": 0.925,
    "intent_distribution": [{"intent": "transfer", "runs": 300, "share": 0.25},
                            {"intent": "out_of_scope", "runs": 99, "share": 0.0825}],
    "user_roles": [{"user_role": "customer", "runs": 1000, "share": 0.8333}],
    "modules": [{"module": "banking", "runs": 800, "share": 0.6667}],
}
TREND_DAY = {"day": "2026-11-26", "runs": 180, "success_rate": 0.9889, "avg_confidence": 0.81, "p50_ms": 1.2,
             "p95_ms": 980.5, "out_of_scope_rate": 0.0833, "error_rate": 0.0111}
EMPTY_DAY = {"day": "2026-11-25", "runs": 0, "success_rate": None, "avg_confidence": None, "p50_ms": None,
             "p95_ms": None, "out_of_scope_rate": None, "error_rate": None}
ERRORS_EXAMPLE = {
    "total_errors": 15, "error_rate": 0.0125,
    "by_category": [{"error_category": "lm_timeout", "count": 10, "fallbacks": 14, "runs": 24}],
    "by_type": [{"error_type": "TimeoutError", "error_category": "lm_timeout", "count": 10,
                 "sample_run_id": "3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b"}],
    "per_day": [{"day": "2026-11-26", "runs": 180, "errors": 2, "error_rate": 0.0111}],
    "latest": [{"run_id": "3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b", "request_id": "6f1c3e0a-8d3b-4c1e-9a57-2d1f0b7a9c11",
                "start_time": "2026-11-26T09:14:03.120000Z", "error_category": "lm_timeout",
                "error_type": "TimeoutError",
                "mlflow_url": "http://127.0.0.1:5000/#/experiments/1/runs/3f0c9e2b6a1d4f7e8b5c2a9d0e1f3a4b"}],
}
MODELS_EXAMPLE = {"models": [{
    "model_name": "openai/gpt-4o-mini", "runs": 400, "success_rate": 0.97, "lm_success_rate": 0.97,
    "fallback_rate": 0.03, "error_rate": 0.03, "avg_confidence": 0.88, "avg_ms": 640.2, "p50_ms": 610.0,
    "p95_ms": 1350.7, "prompt_tokens": 84210, "completion_tokens": 9120, "cost_usd": 0.0291, "labelled_runs": 25,
    "accuracy": 0.96,
    "own_answers": {"runs": 388, "avg_confidence": 0.88, "avg_ms": 640.2, "p50_ms": 610.0, "p95_ms": 1350.7,
                    "labelled_runs": 24, "accuracy": 0.9583},
    "fallback_answers": {"runs": 12, "avg_confidence": 0.91, "avg_ms": 10002.1, "p50_ms": 10001.0,
                         "p95_ms": 10004.2, "labelled_runs": 1, "accuracy": 1.0}}]}
PROMPTS_EXAMPLE = {"versions": [{
    "prompt_version": "3fa2c81d09be", "first_seen": "2026-11-01T08:00:00Z", "last_seen": "2026-11-26T09:14:03Z",
    "runs": 1200, "avg_confidence": 0.81, "avg_ms": 212.4, "p95_ms": 1021.8, "error_rate": 0.0125,
    "out_of_scope_rate": 0.0825, "labelled_runs": 40, "accuracy": 0.925,
    "evaluation": {"run_id": "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", "in_scope_accuracy": 0.924, "oos_recall": 0.583,
                   "macro_f1": 0.91, "latency_p50_ms": 0.05, "examples": 5500,
                   "evaluated_at": "2026-11-25T18:02:11Z"}}]}
SLA_EXAMPLE = {"p95_ms_target": 1000.0, "error_rate_target": 0.01, "days_with_runs": 29, "days_meeting_p95": 27,
               "days_meeting_error_rate": 25, "share_meeting_p95": 0.931, "share_meeting_error_rate": 0.862}
CONFUSION_EXAMPLE = {
    "labelled_runs": 3, "accuracy": 0.6667,
    "matrix": [{"expected": "balance", "detected": "balance", "count": 2},
               {"expected": "transfer", "detected": "balance", "count": 1}],
    "per_intent": [{"intent": "balance", "precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
                   {"intent": "transfer", "precision": None, "recall": 0.0, "f1": None, "support": 1}],
}
ERROR_400 = OpenApiExample("Bad period", status_codes=["400"], response_only=True,
                           value={"days": ["Ensure this value is less than or equal to 365."]})

