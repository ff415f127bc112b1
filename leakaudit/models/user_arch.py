"""Resolving ``--arch``: a zoo name, ``path/to/file.py:factory`` or ``package.module:factory``.

User code is imported and its factory called with ``arch_kwargs`` (plus ``num_classes`` / ``input_shape``
when the factory accepts them and they are known). It runs with the user's own rights, like any script
they would run themselves.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError, ModelError
from .zoo import ARCHITECTURES


@dataclass(frozen=True)
class Architecture:
    spec: str  # what the user gave
    factory: Callable[..., nn.Module]
    builtin: bool  # a zoo architecture (accepts the zoo's common keywords)


def resolve(spec: str) -> Architecture:
    if ":" not in spec:
        return Architecture(spec, ARCHITECTURES.get(spec), builtin=True)  # UnknownNameError lists the names
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise ConfigError(f"--arch {spec}: expected NAME, path/to/file.py:factory or package.module:factory")
    module = _import_file(spec, Path(target)) if target.endswith(".py") else _import_module(spec, target)
    factory = getattr(module, name, None)
    if not callable(factory):
        available = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"--arch {spec}: {target} has no callable {name!r}; "
                          f"pick one of: {', '.join(available[:12]) or 'none defined'}")
    return Architecture(spec, factory, builtin=False)


def build(arch: Architecture, *, num_classes: int | None, input_shape: tuple[int, ...] | None,
          arch_kwargs: dict[str, Any]) -> nn.Module:
    kwargs = dict(arch_kwargs)
    accepted = _accepted_keywords(arch.factory)
    for key, value in (("num_classes", num_classes), ("input_shape", input_shape)):
        if value is not None and key not in kwargs and (accepted is None or key in accepted):
            kwargs[key] = value
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"--arch {arch.spec}: the factory takes no argument {', '.join(unknown)}; "
                              f"it accepts: {', '.join(sorted(accepted)) or 'nothing'}")
    try:
        module = arch.factory(**kwargs)
    except Exception as e:  # noqa: BLE001 -- user code: any error is the user's to fix
        raise ModelError(f"--arch {arch.spec}: building the model failed ({type(e).__name__}: {e}); "
                         "check the architecture's arguments (arch_kwargs, --input-shape, --num-classes)") from e
    if not isinstance(module, nn.Module):
        raise ModelError(f"--arch {arch.spec}: the factory returned {type(module).__name__}, not a torch nn.Module; "
                         "make it return the model")
    return module


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
        raise ConfigError(f"--arch {spec}: {path} does not exist; give path/to/file.py:factory")
    module_name = f"leakaudit_user_arch_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"--arch {spec}: {path} cannot be imported as Python; give path/to/file.py:factory")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 -- user code
        sys.modules.pop(module_name, None)
        raise ConfigError(f"--arch {spec}: importing {path} failed ({type(e).__name__}: {e}); "
                          "fix the file or run it with python to see the error") from e
    return module


def _import_module(spec: str, name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(f"--arch {spec}: cannot import module {name!r} ({e}); install it or give "
                          "path/to/file.py:factory") from e
    except Exception as e:  # noqa: BLE001 -- user code
        raise ConfigError(f"--arch {spec}: importing {name!r} failed ({type(e).__name__}: {e}); "
                          "fix the module") from e
