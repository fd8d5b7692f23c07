"""The OpenAPI schema as a judge of real answers: an answer must have a status, a content type, the headers and a
body that /api/schema/ documents for its operation (OpenAPI 3.0's `nullable` read as JSON Schema's null)."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0's schema dialect as JSON Schema: `nullable: true` becomes "or null"."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


class AnswerChecker:
    """`check(response, path=..., method=...)` fails with every difference between the answer and the schema."""

    def __init__(self, client) -> None:
        response = client.get("/api/schema/", {"format": "json"})
        assert response.status_code == 200, response.content
        self.document = response.json()
        self.components = json_schema(self.document["components"])
        self.checked: set[tuple[str, str, int]] = set()

    def __call__(self, response, *, path: str, method: str = "get") -> None:
        where = f"{method.upper()} {path} → {response.status_code}"
        documented = self.document["paths"][path][method]["responses"]
        assert str(response.status_code) in documented, f"{where}: status not documented ({sorted(documented)})"
        answer = documented[str(response.status_code)]
        media_type = response["Content-Type"].split(";")[0].strip()
        assert media_type in answer.get("content", {}), f"{where}: {media_type} not documented"
        for name, header in answer.get("headers", {}).items():
            assert not header.get("required") or response.has_header(name), f"{where}: no {name} header"
        self.checked.add((method, path, response.status_code))
        if media_type != "application/json":
            return
        schema = json_schema(answer["content"][media_type]["schema"]) | {"components": self.components}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(response.json()), key=lambda error: list(error.absolute_path))
        assert not errors, f"{where}:\n" + "\n".join(
            f"  {'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message[:300]}" for error in errors[:20])
