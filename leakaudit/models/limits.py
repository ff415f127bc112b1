"""The per-tensor element bound both loaders enforce (see ``onnx_limits`` for why it is per tensor).

Kept apart from ``onnx_limits`` so a safetensors scan checks its input shape without importing onnx.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

ENV_MAX_ELEMENTS = "LEAKAUDIT_MAX_TENSOR_ELEMENTS"
DEFAULT_MAX_ELEMENTS = 2 ** 28


def max_elements() -> int:
    raw = os.environ.get(ENV_MAX_ELEMENTS)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_ELEMENTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{ENV_MAX_ELEMENTS}={raw!r}: not a positive integer; set it to a number of elements, "
                          f"e.g. {DEFAULT_MAX_ELEMENTS}, or unset it")
    return value
