"""Resolving ``--arch``: a zoo name, ``path/to/file.py:factory`` or ``package.module:factory``.

User code is imported and its factory called with ``arch_kwargs`` (plus ``num_classes`` / ``input_shape``
when the factory accepts them and they are known). It runs with the user's own rights, like any script
they would run themselves, so only a name the user gave (``--arch``, config) may be code; a model file's
metadata may name a zoo architecture only (``safetensors_loader``).

Whatever user code raises while it is imported or called (``sys.exit(0)``, any ``BaseException``) becomes an
input error naming the file and factory: an exit from user code must not end the scan with status 0 and no
report, which a CI gate reads as a pass. ``KeyboardInterrupt`` is left alone: it is how Ctrl-C arrives, and
the CLI ends with 130 (interrupted), never a pass.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError, ModelError, setting_ref
from .zoo import ARCHITECTURES

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH = setting_ref("arch")
ARCH_ARGS = setting_ref("arch_args")
INPUT_SHAPE = setting_ref("input_shape")
NUM_CLASSES = setting_ref("num_classes")


@dataclass(frozen=True)
class Architecture:
    spec: str  # what the user gave
    factory: Callable[..., nn.Module]
    builtin: bool  # a zoo architecture (accepts the zoo's common keywords)
    label: str = ""  # where the name comes from, first in messages: the arch setting and NAME unless given

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", f"{ARCH} {self.spec}")


def is_code_reference(spec: str) -> bool:
    """``file.py:factory`` or ``package.module:factory``: naming it imports and runs code."""
    return ":" in spec


def resolve(spec: str, label: str | None = None) -> Architecture:
    if not is_code_reference(spec):
        if label is not None and spec not in ARCHITECTURES.names():
            raise ModelError(f"{label}: {ARCHITECTURES.unknown_message(spec)}; fix the metadata or give {ARCH}")
        return Architecture(spec, ARCHITECTURES.get(spec), builtin=True, label=label or "")
    target, _, name = spec.rpartition(":")
    if target == "timm":
        return _timm(spec, name)
    if not target or not name.isidentifier():
        raise ConfigError(f"{ARCH} {spec}: expected NAME, path/to/file.py:factory or package.module:factory")
    module = _import_file(spec, Path(target)) if target.endswith(".py") else _import_module(spec, target)
    factory = getattr(module, name, None)
    if not callable(factory):
        available = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"{ARCH} {spec}: {target} has no callable {name!r}; "
                          f"pick one of: {', '.join(available[:12]) or 'none defined'}")
    return Architecture(spec, factory, builtin=False)


def build(arch: Architecture, *, num_classes: int | None, input_shape: tuple[int, ...] | None,
          arch_kwargs: dict[str, Any]) -> nn.Module:
    kwargs = dict(arch_kwargs)
    accepted = _accepted_keywords(arch.factory)
    named = _named_keywords(arch.factory)
    for key, value in (("num_classes", num_classes), ("input_shape", input_shape)):
        # A factory with **kwargs gets num_classes (torchvision and timm take it there) but input_shape only when
        # its signature names it: torchvision.models.resnet18(input_shape=...) fails deep in the model's __init__.
        wanted = key in named or (accepted is None and (key == "num_classes" or arch.builtin))
        if value is not None and key not in kwargs and wanted:
            kwargs[key] = value
    if arch.builtin and "dropout" in kwargs and not is_rate(kwargs["dropout"]):
        raise ConfigError(f"{arch.label}: dropout={kwargs['dropout']!r} is not a dropout rate in [0, 1); give e.g. "
                          f"{ARCH_ARGS} dropout=0.25 (0: none)")
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"{arch.label}: the factory takes no argument {', '.join(unknown)}; "
                              f"it accepts: {', '.join(sorted(accepted)) or 'nothing'}")
    try:
        module = arch.factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- user code: any error, even an exit, is the user's to fix
        raise ModelError(f"{arch.label}: building the model failed ({describe_exception(e)}); "
                         f"check the architecture's arguments (arch_kwargs, {INPUT_SHAPE}, {NUM_CLASSES})") from e
    if not isinstance(module, nn.Module):
        raise ModelError(f"{arch.label}: the factory returned {type(module).__name__}, not a torch nn.Module; "
                         "make it return the model")
    return module


def is_rate(value: Any) -> bool:
    """A dropout probability: a finite number in [0, 1) (NaN or a negative rate would silently mean none)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value < 1.0)


def guard_exits(module: nn.Module, label: str) -> None:
    """Make an exit from the user model's forward (called in every attack step, long after loading) an input
    error, not the end of the process with status 0. The module's class is swapped for a subclass whose
    forward converts it; parameter names, hooks and ``copy.deepcopy`` are unchanged."""
    cls = type(module)

    def forward(self, *args, **kwargs):
        try:
            return super(guarded, self).forward(*args, **kwargs)
        except KeyboardInterrupt:
            raise
        except Exception:
            raise
        except BaseException as e:  # noqa: BLE001 -- SystemExit and kin from user code
            raise ModelError(f"{label}: the model's forward stopped the process ({describe_exception(e)}); "
                             "fix the architecture's code") from e

    guarded = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__})
    try:
        module.__class__ = guarded
    except TypeError:  # a class that refuses it (slots, extension types): left as it is
        pass


def describe_exception(e: BaseException) -> str:
    """One line for an exception of user code; exits are named as such (their text is just the code)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _named_keywords(factory: Callable[..., Any]) -> set[str]:
    """Keyword names the factory's signature spells out (``**kwargs`` not counted)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)}


def _timm(spec: str, name: str) -> Architecture:
    """``timm:MODEL_NAME``: ``timm.create_model(MODEL_NAME, pretrained=False, ...)``; the weights come from the
    file, and nothing is downloaded."""
    if not name:
        raise ConfigError(f"{ARCH} {spec}: name a timm model, e.g. timm:vit_tiny_patch16_224")
    try:
        import timm  # noqa: F401 -- optional dependency, imported only when asked for by name
    except ImportError as e:
        raise ConfigError(f"{ARCH} {spec}: timm is not installed; pip install 'leakaudit[timm]'") from e

    def factory(**kwargs: Any) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return Architecture(spec, factory, builtin=False)


def _accepted_keywords(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword names the factory takes, or None when it takes ``**kwargs`` (anything goes)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)}


def _import_file(spec: str, path: Path):
    if not path.is_file():
        raise ConfigError(f"{ARCH} {spec}: {path} does not exist; give path/to/file.py:factory")
    module_name = f"leakaudit_user_arch_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"{ARCH} {spec}: {path} cannot be imported as Python; give path/to/file.py:factory")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- user code: even an exit at import is an input error
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{ARCH} {spec}: importing {path} failed ({describe_exception(e)}); "
                          "fix the file or run it with python to see the error") from e
    return module


def _import_module(spec: str, name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(f"{ARCH} {spec}: cannot import module {name!r} ({e}); install it or give "
                          "path/to/file.py:factory") from e
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- user code: even an exit at import is an input error
        raise ConfigError(f"{ARCH} {spec}: importing {name!r} failed ({describe_exception(e)}); "
                          "fix the module") from e
