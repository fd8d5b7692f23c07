"""The tracking contract, once: the names a detection run carries in MLflow, their types, how the analytics mirror
keeps them, the experiments, and where local stores put artifacts. Django-free; both apps import it: `intent`
writes runs with these names, `analytics` reads them back.

To add a metric (tag, param): one `Field` line in `FIELDS` and its value in `intent.tracking.run_payload_build`.
The mirror keeps a name without `column` in the JSON column of its source (`MirroredRun.metrics`, `.tags`,
`.params`), with no other edit. `column=True` types it in a column of the same name instead: add that field to
`MirroredRun` and a migration (a system check names what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TAG, PARAM, METRIC = "tag", "param", "metric"
Source = Literal["tag", "param", "metric"]
# How a value is typed in its mirror column (a value that does not fit stays, as it came, in the JSON column):
# text: '' when missing or longer than max_length; optional_text: NULL instead of ''; boolean: 'true'/'True' and
# 'false'/'False'; integer: up to 10 ASCII digits, optionally signed, within 32 bits; real: a finite float; whole:
# a float holding a 32-bit integer; feedback: 1.0 / 0.0; status: 'error' / 'success', read for `is_error`.
Kind = Literal["text", "optional_text", "boolean", "integer", "real", "whole", "feedback", "status"]


@dataclass(frozen=True)
class Field:
    name: str
    source: Source
    kind: Kind
    max_length: int = 200
    column: bool = False  # the mirror has a typed column of this name


FIELDS: tuple[Field, ...] = (
    # Tags of a detection run
    Field("user_role", TAG, "text", column=True),
    Field("current_module", TAG, "text", column=True),
    Field("current_tab", TAG, "text", column=True),
    Field("detected_intent", TAG, "text", column=True),
    Field("dspy_version", TAG, "text", max_length=32, column=True),
    Field("prompt_version", TAG, "text", max_length=64, column=True),
    Field("request_id", TAG, "text", max_length=64, column=True),
    Field("status", TAG, "status"),  # read for MirroredRun.is_error
    Field("fallback_used", TAG, "boolean", column=True),
    Field("answered_by", TAG, "text", column=True),  # the model whose answer it is (the local one after a fallback)
    Field("error_category", TAG, "text", max_length=64, column=True),
    Field("error_type", TAG, "text", column=True),
    Field("message", TAG, "text", max_length=4000),  # redacted, only with INTENT_LOG_MESSAGES=1
    Field("experiment", TAG, "text", max_length=100, column=True),  # the running A/B experiment it took part in
    Field("variant", TAG, "text", max_length=100, column=True),  # its arm there: `control` or a variant's name
    Field("subject_hash", TAG, "text", max_length=32),  # HMAC of the caller's subject_id (never the id itself)
    # Params
    Field("model_name", PARAM, "text", column=True),  # the configured model
    Field("message_length", PARAM, "integer", column=True),
    Field("message_word_count", PARAM, "integer", column=True),
    Field("requires_workflow", PARAM, "boolean", column=True),
    Field("category_source", PARAM, "text", max_length=32, column=True),
    # Metrics
    Field("confidence_score", METRIC, "real", column=True),
    Field("response_time_ms", METRIC, "real", column=True),
    Field("template_match_rate", METRIC, "real", column=True),
    Field("available_workflow_templates", METRIC, "whole", column=True),
    Field("available_agent_templates", METRIC, "whole", column=True),
    Field("prompt_tokens", METRIC, "whole", column=True),  # when the LM reports them
    Field("completion_tokens", METRIC, "whole", column=True),
    Field("cost_usd", METRIC, "real", column=True),
    # Feedback, written on the run after the fact (contract B)
    Field("expected_intent", TAG, "optional_text", column=True),
    Field("is_correct", METRIC, "feedback", column=True),
    Field("feedback_comment", TAG, "text", max_length=500),  # redacted
)
BY_NAME = {field.name: field for field in FIELDS}

# The names, for code that writes or reads one of them
USER_ROLE, CURRENT_MODULE, CURRENT_TAB = "user_role", "current_module", "current_tab"
DETECTED_INTENT, DSPY_VERSION, PROMPT_VERSION, REQUEST_ID = "detected_intent", "dspy_version", "prompt_version", "request_id"
STATUS, FALLBACK_USED, ANSWERED_BY = "status", "fallback_used", "answered_by"
ERROR_CATEGORY, ERROR_TYPE, MESSAGE = "error_category", "error_type", "message"
EXPERIMENT, VARIANT, SUBJECT_HASH = "experiment", "variant", "subject_hash"
MODEL_NAME, MESSAGE_LENGTH, MESSAGE_WORD_COUNT = "model_name", "message_length", "message_word_count"
REQUIRES_WORKFLOW, CATEGORY_SOURCE = "requires_workflow", "category_source"
CONFIDENCE_SCORE, RESPONSE_TIME_MS, TEMPLATE_MATCH_RATE = "confidence_score", "response_time_ms", "template_match_rate"
AVAILABLE_WORKFLOW_TEMPLATES, AVAILABLE_AGENT_TEMPLATES = "available_workflow_templates", "available_agent_templates"
PROMPT_TOKENS, COMPLETION_TOKENS, COST_USD = "prompt_tokens", "completion_tokens", "cost_usd"
EXPECTED_INTENT, IS_CORRECT, FEEDBACK_COMMENT = "expected_intent", "is_correct", "feedback_comment"
FEEDBACK_COMMENT_MAX = BY_NAME[FEEDBACK_COMMENT].max_length

# Values
STATUS_SUCCESS, STATUS_ERROR = "success", "error"
OUT_OF_SCOPE = "out_of_scope"
RUN_FINISHED, RUN_FAILED, RUN_RUNNING, RUN_SCHEDULED = "FINISHED", "FAILED", "RUNNING", "SCHEDULED"
UNFINISHED_STATUSES = (RUN_RUNNING, RUN_SCHEDULED)
LIFECYCLE_ACTIVE, LIFECYCLE_DELETED = "active", "deleted"

# Experiments besides the detection one (setting MLFLOW_EXPERIMENT_NAME): prompt versions, and the offline
# evaluations and optimizations (contract C, below)
PROMPT_VERSIONS_EXPERIMENT = "intent_prompt_versions"
EVALUATION_EXPERIMENT = "intent_evaluation"
OPTIMIZATION_EXPERIMENT = "intent_optimization"
PROMPT_EXPERIMENTS_EXPERIMENT = "intent_experiments"  # one run per live prompt experiment (intent.experiments)
# The registry: each prompt version a version of this registered model (tagged with its hash), the LM programs'
# instructions in the Prompt Registry under INSTRUCTIONS_PROMPT; aliases: production (what answers), candidate.
REGISTERED_MODEL = "intent-detector"
INSTRUCTIONS_PROMPT = "intent-detector-instructions"
ALIASES = ("production", "candidate")
BACKEND = "backend"  # model version tag: "local" or "lm"

# Offline evaluation and optimization runs (contract C), in EVALUATION_EXPERIMENT and OPTIMIZATION_EXPERIMENT
# Tags
RUN_KIND = "run_kind"  # "evaluation" | "optimization"
DATASET = "dataset"
SPLIT = "split"
BASE_PROMPT_VERSION = "base_prompt_version"
OPTIMIZER = "optimizer"
CATALOG_VERSION = "catalog_version"
IMPROVED = "improved"  # optimization: "true" | "false" (score_after > score_before; a tie is "false")
# Metrics
IN_SCOPE_ACCURACY = "in_scope_accuracy"
OOS_RECALL = "oos_recall"
MACRO_F1 = "macro_f1"
LATENCY_P50_MS = "latency_p50_ms"
EXAMPLES = "examples"
ECE = "ece"  # expected calibration error of the confidences (10 equal-width bins; intentsite.calibration)
BRIER = "brier"  # Brier score of the confidences against right/wrong
SCORE_BEFORE = "score_before"
SCORE_AFTER = "score_after"
# Artifacts
PER_INTENT_REPORT_ARTIFACT = "per_intent_report.json"
CONFUSION_MATRIX_ARTIFACT = "confusion_matrix.png"
PROGRAM_STATE_ARTIFACT = "program_state.json"
EVALUATION_METRICS = (IN_SCOPE_ACCURACY, OOS_RECALL, MACRO_F1, LATENCY_P50_MS, EXAMPLES, ECE, BRIER)


def artifact_location(*, tracking_uri: str, artifact_root: Path | str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: under `artifact_root/<experiment>` for a local store (not
    `./mlruns` of whatever the working directory is); a tracking server decides for itself (None)."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    root = Path(artifact_root)
    root.mkdir(parents=True, exist_ok=True)
    return (root / experiment).resolve().as_uri()
