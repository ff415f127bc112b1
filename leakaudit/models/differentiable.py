"""Twice-differentiable stand-ins for activations torch can differentiate only once.

Gradient matching differentiates the model's gradient again (a double backward). torch has no derivative
for ``hardsigmoid_backward``, so torchvision's MobileNetV3 (``nn.Hardsigmoid`` in its squeeze-excitation
blocks) crashed every optimisation attack. The attacker's copy of the model gets the same function written
with ``clamp``, whose backward is differentiable: identical outputs, a usable second derivative. The user's
model and the client update (first order only) are never changed.

The same holds for attention: torch's fused CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``) has
no double backward, so timm's ``Attention`` layers (``fused_attn`` on by default) crashed IG/DIA on ViTs
loaded from safetensors. The copy runs their unfused path (softmax of the scaled product, then the values),
the same function written with differentiable ops.
"""

from __future__ import annotations

import torch
from torch import nn


class ClampHardsigmoid(nn.Module):
    """``hardsigmoid(x) = clamp(x + 3, 0, 6) / 6``, differentiable twice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


class ClampHardswish(nn.Module):
    """``hardswish(x) = x * clamp(x + 3, 0, 6) / 6``, differentiable twice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


_STAND_INS: dict[type[nn.Module], type[nn.Module]] = {nn.Hardsigmoid: ClampHardsigmoid, nn.Hardswish: ClampHardswish}


def twice_differentiable(module: nn.Module) -> list[str]:
    """Swap, in place, every submodule torch cannot differentiate twice for its stand-in; the names swapped.

    Call it on the attacker's own copy only."""
    swapped = []
    for name, parent in list(module.named_modules()):
        if getattr(parent, "fused_attn", None) is True:  # timm attention layers and their copies
            parent.fused_attn = False
            swapped.append(name)
        for child_name, child in list(parent.named_children()):
            stand_in = _STAND_INS.get(type(child))
            if stand_in is not None:
                setattr(parent, child_name, stand_in())
                swapped.append(f"{name}.{child_name}" if name else child_name)
    return swapped
