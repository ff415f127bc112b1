"""report.json: the document itself (``reports/report.schema.json``)."""

from __future__ import annotations

import json
from typing import Any

from ..safetext import json_text


def render_json(doc: dict[str, Any]) -> str:
    # allow_nan=False: a NaN reaching this point is a bug in document building, not valid JSON to ship.
    # ensure_ascii=False keeps names readable; json_text escapes what would drive a terminal (--output -)
    return json_text(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
