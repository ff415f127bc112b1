"""safetensors weights + an architecture -> a torch module.

The file's ``__metadata__`` may describe how to rebuild the model; options given to ``load_model`` win.
All values are JSON strings (safetensors metadata is str -> str):

==========================  ===========================================  =====================
key                         meaning                                      example
==========================  ===========================================  =====================
``leakaudit.arch``          zoo name (never code, see below)             ``"cnn"``
``leakaudit.input_shape``   one sample, no batch dimension               ``[3, 32, 32]``
``leakaudit.num_classes``   classes of the output                        ``10``
``leakaudit.dropout``       zoo dropout rate                             ``0.25``
``leakaudit.precode``       zoo PRECODE bottleneck                       ``true``
``leakaudit.latent_dim``    zoo PRECODE latent size                      ``256``
``leakaudit.arch_kwargs``   any other zoo factory arguments              ``{"width": 16}``
==========================  ===========================================  =====================

(``leakaudit.arch`` is stored as the plain string, without JSON quotes, for readability; both load.)
``save_safetensors`` writes these keys.

A model file is data: opening one must not run code. So the metadata may name a built-in (zoo)
architecture only; a code reference (``file.py:factory``, ``package.module:factory``) in it is refused with
the ``--arch`` to give when the user trusts that code. The metadata's factory arguments (``dropout``,
``arch_kwargs``...) configure a zoo architecture only: a third-party factory (``--arch timm:...``,
``package.module:factory``, ``file.py:factory``) gets arguments from the command line or config file alone,
and a keyword that makes a factory open or download a file (``userfiles.LOADER_KEYWORDS``) is refused in the
metadata. Malformed metadata (a dropout rate of NaN or -0.5 included) is an input error that names the
metadata key, not an option the user never gave.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from ..errors import InputError, ModelError, setting_ref
from ..userfiles import LOADER_KEYWORDS
from . import user_arch
from .limits import max_elements
from .dropout_tools import replace_dropout
from .zoo import ARCHITECTURES

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH = setting_ref("arch")
ARCH_ARGS = setting_ref("arch_args")
INPUT_SHAPE = setting_ref("input_shape")
NUM_CLASSES = setting_ref("num_classes")

META_PREFIX = "leakaudit."
ZOO_KEYS = ("dropout", "precode", "latent_dim")


@dataclass(frozen=True)
class SafetensorsParts:
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    arch: str


def save_safetensors(module: nn.Module, path: str | Path, *, arch: str | None = None,
                     input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                     arch_kwargs: dict[str, Any] | None = None) -> None:
    """Save ``module``'s weights with the metadata ``load_model`` reads back (no options needed then)."""
    meta: dict[str, str] = {}
    if arch is not None:
        meta[META_PREFIX + "arch"] = arch
    if input_shape is not None:
        meta[META_PREFIX + "input_shape"] = json.dumps([int(d) for d in input_shape])
    if num_classes is not None:
        meta[META_PREFIX + "num_classes"] = json.dumps(int(num_classes))
    extra = dict(arch_kwargs or {})
    for key in ZOO_KEYS:
        if key in extra:
            meta[META_PREFIX + key] = json.dumps(extra.pop(key))
    if extra:
        meta[META_PREFIX + "arch_kwargs"] = json.dumps(extra)
    save_model(module, str(path), metadata=meta)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``leakaudit.*`` entries of the file's metadata, decoded (prefix removed)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 -- safetensors raises SafetensorError/OSError on garbage
        raise ModelError(f"{path}: not a readable safetensors file ({_first_line(e)}); check the file is "
                         "complete or save it again with safetensors.torch.save_file") from e
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith(META_PREFIX):
            continue
        name = key[len(META_PREFIX):]
        try:
            out[name] = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as e:
            if name == "arch":
                out[name] = value
            else:
                raise ModelError(f"{path}: the file's metadata {key}={_short(value)} is not JSON; "
                                 f"{_metadata_fix(name)}") from e
    if "arch" in out and not isinstance(out["arch"], str):
        raise ModelError(f"{path}: the file's metadata {META_PREFIX}arch={_short(raw[META_PREFIX + 'arch'])} is "
                         f"not an architecture name; {_metadata_fix('arch')}")
    return out


_OVERRIDES = {"arch": ARCH, "input_shape": INPUT_SHAPE, "num_classes": NUM_CLASSES}


def _metadata_fix(name: str) -> str:
    option = _OVERRIDES.get(name)
    fix = "fix the metadata (e.g. save the weights again with leakaudit.models.save_safetensors)"
    return f"{fix} or give {option}" if option else fix


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def load_safetensors(path: Path, *, arch: str | None = None, input_shape: tuple[int, ...] | None = None,
                     num_classes: int | None = None, arch_kwargs: dict[str, Any] | None = None
                     ) -> SafetensorsParts:
    meta = read_metadata(path)
    tensors = _read_tensors(path)
    spec = arch or meta.get("arch")
    if not spec:
        raise InputError(f"{path}: safetensors holds weights only and its metadata names no architecture; give "
                         f"{ARCH} NAME ({', '.join(ARCHITECTURES.names())}) or {ARCH} path/to/file.py:factory")
    architecture = user_arch.resolve(str(spec)) if arch else _metadata_architecture(path, str(spec))
    kwargs = _arch_kwargs(path, meta, architecture, arch_kwargs)
    shape = _input_shape(path, input_shape, meta, architecture)
    classes = num_classes if num_classes is not None else _metadata_classes(path, meta)
    if classes is None and _takes(architecture, "num_classes"):
        classes = _classes_from_weights(architecture, shape, kwargs, tensors)
    module = user_arch.build(architecture, num_classes=classes, input_shape=shape, arch_kwargs=kwargs)
    if not architecture.builtin:
        user_arch.guard_exits(module, architecture.label)
    what = f"{ARCH} {spec}" if arch else _metadata_arch(str(spec))
    check_weights(path, module, tensors, what)
    module.load_state_dict(tensors, strict=False)
    replace_dropout(module)
    out_classes = _run_once(path, module, shape, what)
    if classes is not None and int(classes) != out_classes:
        raise ModelError(f"{path}: {what} outputs {out_classes} classes, expected {classes}; "
                         f"fix {NUM_CLASSES} or the file's leakaudit.num_classes metadata")
    return SafetensorsParts(module=module, input_shape=shape, num_classes=out_classes, arch=str(spec))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: not a readable safetensors file ({_first_line(e)}); check the file is "
                         "complete or save it again with safetensors.torch.save_file") from e


def _metadata_architecture(path: Path, spec: str) -> user_arch.Architecture:
    if user_arch.is_code_reference(spec):
        raise ModelError(f"{path}: the file's metadata {META_PREFIX}arch={spec!r} asks to run code; a model "
                         f"file may only name a built-in architecture ({', '.join(ARCHITECTURES.names())}): if "
                         f"you trust that code, run it on purpose with {ARCH} path/to/file.py:factory")
    return user_arch.resolve(spec, label=f"{path}: {_metadata_arch(spec)}")


def _metadata_arch(spec: str) -> str:
    return f"the architecture {spec!r} named by the file's metadata ({META_PREFIX}arch)"


def _metadata_classes(path: Path, meta: dict[str, Any]) -> int | None:
    value = meta.get("num_classes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{path}: the file's metadata {META_PREFIX}num_classes={_short(value)} is not a positive "
                         f"integer; {_metadata_fix('num_classes')}")
    return value


def _arch_kwargs(path: Path, meta: dict[str, Any], architecture: user_arch.Architecture,
                 given: dict[str, Any] | None) -> dict[str, Any]:
    """The factory's arguments: the file's metadata configures a built-in (zoo) architecture only -- a
    third-party factory (``--arch timm:...``, ``package.module:factory``, ``file.py:factory``) gets its
    arguments from the command line or config file alone, so a model file cannot make timm open a checkpoint
    or torchvision download weights. ``given`` (``--arch-arg``) wins."""
    kwargs: dict[str, Any] = {}
    if architecture.builtin:
        kwargs.update({k: meta[k] for k in ZOO_KEYS if k in meta})
        extra = meta.get("arch_kwargs")
        if extra is not None and not (isinstance(extra, dict) and all(isinstance(k, str) for k in extra)):
            raise ModelError(f"{path}: the file's metadata {META_PREFIX}arch_kwargs={_short(extra)} is not a JSON "
                             f"object of factory arguments; {_metadata_fix('arch_kwargs')}")
        loaders = sorted(k for k in (extra or {}) if k in LOADER_KEYWORDS)
        if loaders:
            raise ModelError(f"{path}: the file's metadata {META_PREFIX}arch_kwargs names {loaders[0]}, which opens "
                             f"or downloads a file; a model file may not ask for that: "
                             f"{_metadata_fix('arch_kwargs')}")
        kwargs.update(extra or {})
        if "dropout" in kwargs and "dropout" not in (given or {}) and not user_arch.is_rate(kwargs["dropout"]):
            raise ModelError(f"{path}: the file's metadata {META_PREFIX}dropout={_short(kwargs['dropout'])} is not "
                             f"a dropout rate in [0, 1); {_metadata_fix('dropout')} or give {ARCH_ARGS} dropout=RATE")
    kwargs.update(given or {})
    return kwargs


def _input_shape(path: Path, given, meta: dict[str, Any], architecture: user_arch.Architecture) -> tuple[int, ...]:
    shape = given if given is not None else meta.get("input_shape")
    if shape is None:
        shape = _default_of(architecture, "input_shape")
    if shape is None:
        raise InputError(f"{path}: the input shape is unknown; give {INPUT_SHAPE} C,H,W (one sample) or store "
                         "leakaudit.input_shape in the file's metadata")
    source = INPUT_SHAPE if given is not None else f"the file's metadata {META_PREFIX}input_shape"
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {source} {_short(shape)} is not a list of integers; give {INPUT_SHAPE} C,H,W") \
            from e
    if not dims or any(d < 1 for d in dims) or math.prod(dims) > max_elements():
        raise InputError(f"{path}: {source} {list(dims)} is not a sample shape leakaudit can allocate (dims >= 1, "
                         f"at most {max_elements():,} elements); give {INPUT_SHAPE} C,H,W")
    return dims


def _takes(architecture: user_arch.Architecture, name: str) -> bool:
    try:
        return name in inspect.signature(architecture.factory).parameters
    except (TypeError, ValueError):
        return False


def _default_of(architecture: user_arch.Architecture, name: str) -> Any:
    try:
        param = inspect.signature(architecture.factory).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _classes_from_weights(architecture, shape, kwargs, tensors) -> int | None:
    """Build once with a placeholder class count; the file's shape of the last parameter gives the real one
    (every zoo model ends in its classifier's Linear)."""
    try:
        probe = user_arch.build(architecture, num_classes=7, input_shape=shape, arch_kwargs=kwargs)
    except Exception:  # noqa: BLE001 -- the real build below reports the error properly
        return None
    names = [n for n, _ in probe.named_parameters()]
    if not names or names[-1] not in tensors or tensors[names[-1]].dim() != 1:
        return None
    return int(tensors[names[-1]].shape[0])


def check_weights(path: Path, module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """``what``: the architecture as messages name it (``--arch NAME`` or where the file names it)."""
    expected = module.state_dict()
    aliases = _aliases(expected)
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")
               and not any(a in tensors for a in aliases.get(k, ()))]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in tensors
             if k in expected and tensors[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file vs model)", wrong)):
        if items:
            more = f" +{len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    raise ModelError(f"{path}: weights do not fit {what}: {'; '.join(parts)}; check {ARCH}, {INPUT_SHAPE}, "
                     f"{NUM_CLASSES} and arch_kwargs (or the file's leakaudit.* metadata)")


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """Keys sharing storage (tied weights): save_model keeps only one of them."""
    by_ptr: dict[tuple[int, int], list[str]] = {}
    for k, t in state.items():
        if t.numel():
            by_ptr.setdefault((t.untyped_storage().data_ptr(), int(t.storage_offset())), []).append(k)
    return {k: tuple(n for n in names if n != k) for names in by_ptr.values() if len(names) > 1 for k in names}


def _run_once(path: Path, module: nn.Module, shape: tuple[int, ...], what: str) -> int:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
    except (KeyboardInterrupt, ModelError):  # ModelError: an exit the forward's guard converted
        raise
    except BaseException as e:  # noqa: BLE001 -- user code: even sys.exit in forward is an input error
        raise ModelError(f"{path}: the model of {what} fails on input shape {list(shape)} "
                         f"({user_arch.describe_exception(e)}); fix {INPUT_SHAPE} or the architecture") from e
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        kind = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a tensor of shape {tuple(out.shape)}"
        raise ModelError(f"{path}: the model of {what} returns {kind}; leakaudit needs class logits of "
                         "shape (batch, classes): wrap the model so forward returns them")
    return int(out.shape[1])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
