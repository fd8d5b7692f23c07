"""`prompt_version`: a short, stable hash of everything that decides a detector's answer."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dspy


def program_state(program: dspy.Module) -> dict[str, Any]:
    """A JSON-able description of a DSPy program: per predictor, its signature (instructions,
    field names, roles, types, descriptions, prefixes) and its demos.

    `Module.dump_state()` leaves out field names, types and roles, so they are added here.
    """
    predictors = {}
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        fields = []
        for field_name, field in signature.fields.items():
            extra = field.json_schema_extra or {}
            fields.append(
                {
                    "name": field_name,
                    "role": extra.get("__dspy_field_type"),
                    "type": _type_name(field.annotation),
                    "desc": extra.get("desc"),
                    "prefix": extra.get("prefix"),
                }
            )
        state = predictor.dump_state()
        predictors[name] = {
            "instructions": signature.instructions,
            "fields": fields,
            "demos": state.get("demos", []),
        }
    return {"predictors": predictors}


def version_hash(description: dict[str, Any]) -> str:
    payload = json.dumps(description, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)
