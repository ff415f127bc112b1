"""Making every dropout of a loaded model a ``MaskableDropout``.

Attacks that model dropout (the Dropout Inversion Attack) drive the dropout masks of the client's model:
they substitute a continuous mask per layer through ``MaskableDropout.mask`` and read the realised mask in
tests through ``record``/``last_mask``. A plain ``nn.Dropout`` offers neither, so:

- ``replace_dropout`` swaps ``nn.Dropout`` modules of user code for ``MaskableDropout`` with the same rate.
  Both zero single elements with probability p and scale the rest by 1/(1-p): the same model. Channel-wise
  dropout (``Dropout1d/2d/3d``) and the SELU-preserving ``AlphaDropout``/``FeatureAlphaDropout`` are *not*
  element-wise, so an element mask would be a different model; they are left as they are (detection's
  probe still reports them as stochastic).
- ``insert_declared_dropout`` adds a ``MaskableDropout`` after a named module, for dropout an eval-mode
  export removed (``--dropout NAME=P``). It is a child of the named module's parent, called from a forward
  hook on the named module, so parameter names stay unchanged.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, setting_ref
from .layers import MaskableDropout, MaskableDropPath

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
DROPOUT = setting_ref("dropout")


class DeclaredDropout(MaskableDropout):
    """A ``MaskableDropout`` the user declared (``--dropout NAME=P``), applied to the output of ``after``."""

    def __init__(self, p: float, after: str) -> None:
        super().__init__(p)
        self.after = after

    def apply_after(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # A bound method (not a closure) so copy.deepcopy of the model re-binds the hook to the copied layer.
        return self(output)


def replace_dropout(module: nn.Module) -> list[str]:
    """Replace element-wise ``nn.Dropout`` by ``MaskableDropout`` and stochastic depth by ``MaskableDropPath``;
    return the replaced module names."""
    unfuse_attention_dropout(module)
    replaced = []
    for name, child in list(module.named_modules()):
        new = _maskable(child)
        if new is not None:
            _set_submodule(module, name, new)
            replaced.append(name)
    return replaced


def _maskable(child: nn.Module) -> nn.Module | None:
    """The maskable equivalent of a dropout or stochastic-depth module (matched by exact class: subclasses may
    change behaviour), or None. Rate 0 draws nothing and is left alone."""
    kind = f"{type(child).__module__}.{type(child).__qualname__}"
    if type(child) is nn.Dropout:
        return MaskableDropout(child.p)
    if kind.startswith("timm.") and type(child).__name__ == "DropPath":
        rate = float(getattr(child, "drop_prob", 0.0))
        return MaskableDropPath(rate, scale=bool(getattr(child, "scale_by_keep", True))) if rate else None
    if kind == "torchvision.ops.stochastic_depth.StochasticDepth":
        rate = float(getattr(child, "p", 0.0))
        return MaskableDropPath(rate, per_sample=getattr(child, "mode", "row") == "row") if 0 < rate < 1 else None
    return None


def unfuse_attention_dropout(module: nn.Module) -> list[str]:
    """Attention layers whose dropout is a function argument made to call their dropout module.

    timm's ``Attention`` (and the layers that copy it) keeps an ``attn_drop`` module but, with its
    ``fused_attn`` flag on (the default), passes only its rate to ``F.scaled_dot_product_attention``, so
    the module never runs: the randomness is the fused kernel's, which no attack can mask, and detection
    saw an "unrecognized stochastic" attention layer. The same layer's unfused path (softmax, then
    ``attn_drop``, then the product with v) computes the same function with the dropout as a module call,
    which ``replace_dropout`` then makes a ``MaskableDropout``. Only layers with a non-zero attention
    dropout are switched: the others draw nothing and keep the fused kernel."""
    switched = []
    for name, child in module.named_modules():
        rate = getattr(getattr(child, "attn_drop", None), "p", None)
        if getattr(child, "fused_attn", None) is True and isinstance(rate, (int, float)) and rate > 0:
            child.fused_attn = False
            switched.append(name)
    return switched


def insert_declared_dropout(module: nn.Module, declared: dict[str, float], source: Path | str,
                            aliases: dict[str, str] | None = None) -> dict[str, float]:
    """``aliases``: file name -> module name of ONNX nodes the loader renamed (``OnnxGraphInfo.renamed``)."""
    names = dict(module.named_modules())
    for given, p in declared.items():
        # ONNX node names work too: onnx2torch names a node's module with "/" for "." and no leading "/".
        candidates = ((aliases or {}).get(given), given, given.replace(".", "/").lstrip("/"))
        name = next((n for n in candidates if n and n in names), given)
        if name not in names or not name:
            close = difflib.get_close_matches(name, [n for n in names if n], n=5, cutoff=0.4)
            hint = f"close names: {', '.join(close)}" if close else "see `leakaudit inspect` for the layer names"
            raise ConfigError(f"{DROPOUT} {given}={p}: {source} has no layer {given!r}; {hint}")
        if not 0.0 <= float(p) < 1.0:
            raise ConfigError(f"{DROPOUT} {given}={p}: the rate must be in [0, 1); give e.g. {given}=0.5")
        target = names[name]
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        drop = DeclaredDropout(float(p), after=name)
        parent.add_module(_free_name(parent, f"{leaf}_declared_dropout"), drop)
        target.register_forward_hook(drop.apply_after)
    return {given: float(p) for given, p in declared.items()}


def _free_name(parent: nn.Module, base: str) -> str:
    base = base.replace(".", "_")
    name, i = base, 1
    while hasattr(parent, name):
        name, i = f"{base}_{i}", i + 1
    return name


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)
