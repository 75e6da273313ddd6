"""The JSON Schema of the queue messages' bodies, generated from the pydantic models
(``queue_messages``) so that the file producers read cannot drift from what the sensor
accepts. ``python -m bulk_changes.schemas.generate`` rewrites the committed file; a unit
test checks that it equals what this module generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bulk_changes.schemas.queue_messages import QUEUE_BODY

SCHEMA_FILE = Path(__file__).with_name("queue-message.schema.json")

# the $defs' names producers already refer to (pydantic names them after the classes)
DEF_NAMES = {"BulkChangeRefBody": "bulkChangeRef", "SubmitBulkChangeBody": "submitBulkChange"}

HEADER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://bulk-changes.invalid/schemas/queue-message.schema.json",
    "title": "Bulk-change queue message body",
    "description": "The JSON bodies accepted on the bulk-change queue (generated from "
    "bulk_changes.schemas.queue_messages). The prior system's shape (body unused, id in the "
    "message attribute BulkChangeId, optional RetryFailed and RequestId attributes) is not a "
    "JSON body and is not described here. A whole message (body and attributes) is at most "
    "1 MiB.",
}


def _renamed(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                value = f"#/$defs/{DEF_NAMES.get(name, name)}"
            out[key] = _renamed(value)
        return out
    if isinstance(node, list):
        return [_renamed(item) for item in node]
    return node


def queue_message_schema() -> dict[str, Any]:
    generated = QUEUE_BODY.json_schema(ref_template="#/$defs/{model}")
    defs = {DEF_NAMES.get(name, name): d for name, d in generated.pop("$defs", {}).items()}
    schema: dict[str, Any] = _renamed({**HEADER, **generated, "$defs": defs})
    return schema


def schema_text() -> str:
    return json.dumps(queue_message_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")


if __name__ == "__main__":
    main()
