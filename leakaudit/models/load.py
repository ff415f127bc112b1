"""``load_model``: the user's model file -> ``LoadedModel``, whatever its format."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError, setting_ref
from .dropout_tools import insert_declared_dropout
from .interface import LoadedModel
from .safetensors_loader import load_safetensors

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH = setting_ref("arch")

FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}


def load_model(path: str | Path, *, arch: str | None = None, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None, dropout: dict[str, float] | None = None,
               arch_kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """Load an ONNX file, or safetensors weights with an architecture (``arch``, or the file's metadata).

    - ``input_shape`` / ``num_classes`` override what the file says (ONNX: only where the graph leaves them
      symbolic; a contradiction is an error).
    - ``dropout`` declares dropout an export removed: ``{"layer.name": p}`` adds a ``MaskableDropout`` after
      that layer (names as ``leakaudit inspect`` lists them).
    - ``arch_kwargs`` go to the architecture's factory (zoo: ``dropout``, ``precode``, ``latent_dim``, ...).

    The module is returned in train mode (as a client uses it); its every trainable weight is a parameter.
    """
    path = Path(path)
    kind = _format_of(path)
    if kind == "onnx":
        if arch is not None:
            raise InputError(f"{ARCH} {arch}: {path} is ONNX and holds its own architecture; drop {ARCH}")
        from .onnx_loader import load_onnx  # onnx, onnx2torch and torchvision cost ~2 s: only for ONNX files

        parts = load_onnx(path, input_shape=input_shape, num_classes=num_classes)
        module, shape, classes, onnx_info = parts.module, parts.input_shape, parts.num_classes, parts.info
        arch_name = None
    else:
        st = load_safetensors(path, arch=arch, input_shape=input_shape, num_classes=num_classes,
                              arch_kwargs=arch_kwargs)
        module, shape, classes, onnx_info, arch_name = st.module, st.input_shape, st.num_classes, None, st.arch
    _check_classes(path, int(classes))
    aliases = dict(onnx_info.renamed) if onnx_info is not None else {}
    declared = insert_declared_dropout(module, dict(dropout or {}), path, aliases) if dropout else {}
    module.train()
    return LoadedModel(module=module, input_shape=tuple(shape), num_classes=int(classes), path=path,
                       sha256=sha256_of(path), format=kind, arch=arch_name, onnx=onnx_info,
                       declared_dropout=declared)


def _check_classes(path: Path, classes: int) -> None:
    if classes < 2:
        # The client step is a cross-entropy step: softmax over one logit is 1 whatever the input, so the loss
        # is constant and every gradient zero -- attacks would see nothing and the verdict would be a pass.
        raise ModelError(f"{path}: the model has {classes} output; leakaudit audits classifiers trained with "
                         "cross-entropy, and cross-entropy over one class has a zero gradient, so no verdict "
                         "would mean anything; audit a model with 2 or more class logits (regression models are "
                         "not supported)")


def _format_of(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a model file (.onnx, or .safetensors with {ARCH})")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        suffix = path.suffix or "(no extension)"
        raise InputError(f"{path}: unsupported model format {suffix}; give an .onnx file (torch.onnx.export) or "
                         f".safetensors weights with {ARCH} (safetensors.torch.save_model)")
    return kind


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
