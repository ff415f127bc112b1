"""report.json: the document itself (``reports/report.schema.json``)."""

from __future__ import annotations

import json
import math
from typing import Any

from ..safetext import json_text


def strict(value: Any) -> Any:
    """``value`` with every non-finite float written the schema's way ("inf", "-inf", "nan"): JSON has no such
    numbers, and a strict reader (jq, JavaScript, Go) rejects the NaN/Infinity that Python would write."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def render_json(doc: dict[str, Any]) -> str:
    # The document builder already writes non-finite numbers as strings; strict() makes every path that
    # renders JSON (scan, render) hold to it, and allow_nan=False proves no literal NaN can be written.
    # ensure_ascii=False keeps names readable; json_text escapes what would drive a terminal (--output -)
    return json_text(json.dumps(strict(doc), indent=2, ensure_ascii=False, allow_nan=False)) + "\n"
