"""report.json: the document itself (``reports/report.schema.json``)."""

from __future__ import annotations

import json
from typing import Any


def render_json(doc: dict[str, Any]) -> str:
    # allow_nan=False: a NaN reaching this point is a bug in document building, not valid JSON to ship.
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
