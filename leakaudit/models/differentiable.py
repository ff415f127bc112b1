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

Grouped convolutions (MobileNet's depthwise layers) can be differentiated twice, but slowly: torch's
``_convolution_double_backward`` splits them into per-group pieces, about 12,000 kernel launches per IG
iteration on mobilenet_v3_small (profiled on an H200: the GPU idled 95 % of the time). ``fast_double_backward``
gives the copy's grouped ``Conv2d`` layers the same convolution written as ``unfold`` and one ``einsum``, whose
derivatives are single ``fold``/``unfold``/``einsum`` calls; outputs and second derivatives agree to float64
rounding, and the parameters keep their names (the observed gradients are matched by name).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class UnfoldConv2d(nn.Conv2d):
    """A ``Conv2d`` computed as ``unfold`` + ``einsum``: the same function, a cheap double backward for groups > 1."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        n, channels, height, width = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph, pw = (int(p) for p in self.padding)  # never a string: _unfoldable leaves "same"/"valid" to torch
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        g = self.groups
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))
        cols = cols.view(n, g, channels // g * kh * kw, out_h * out_w)
        kernel = weight.reshape(g, self.out_channels // g, channels // g * kh * kw)
        out = torch.einsum("ngkl,gok->ngol", cols, kernel).reshape(n, self.out_channels, out_h, out_w)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


def _unfoldable(m: nn.Module) -> bool:
    # string padding ("same") and non-zero padding modes are left to torch's own convolution
    return (type(m) is nn.Conv2d and m.groups > 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def fast_double_backward(module: nn.Module) -> list[str]:
    """Give every grouped ``Conv2d`` of ``module`` (in place) the unfold computation; the names changed.

    The class is swapped on the instance, so weights, names and hooks stay. Call it on the attacker's copy only."""
    changed = []
    for name, m in module.named_modules():
        if _unfoldable(m):
            m.__class__ = UnfoldConv2d
            changed.append(name)
    return changed
