"""Import onnx2torch without torchvision; load its two torchvision-backed converters only for a graph that uses them.

onnx2torch's ``node_converters`` package imports every converter module, and two of them (``nms`` for
``NonMaxSuppression``, ``roialign`` for ``RoiAlign``) import torchvision at their top, which imports
``torch._dynamo`` and sympy: about 1.2-1.4 CPU-s and 155 MiB of every ONNX scan's start-up (and of every worker
process's), for two detection ops that an image classifier never has. While this module imports onnx2torch, a
finder hands out an empty module for those two names; afterwards they are forgotten again, so that
``ensure_converters`` (called by the loader with the graph's op types) imports the real modules, which register
their converters through onnx2torch's own ``add_converter`` as they would have at start-up.

Import onnx2torch through this module (``onnx_converters`` does, first): an ``import onnx2torch`` anywhere
before it loads torchvision as usual, which costs time and changes nothing else.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterable
from types import ModuleType

_PACKAGE = "onnx2torch.node_converters"
# ONNX op type -> the onnx2torch converter module that imports torchvision
DEFERRED_OPS = {"NonMaxSuppression": "nms", "RoiAlign": "roialign"}
_DEFERRED_MODULES = frozenset(f"{_PACKAGE}.{name}" for name in DEFERRED_OPS.values())


class _EmptyModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in _DEFERRED_MODULES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default: an empty module

    def exec_module(self, module: ModuleType) -> None:
        pass  # left empty: ``from ... import *`` in the package's __init__ finds no names


def _import_without_torchvision() -> None:
    if "onnx2torch" in sys.modules or "torchvision" in sys.modules:
        return  # already paid for (or imported by someone else): nothing to save
    finder = _EmptyModules()
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("onnx2torch")
    finally:
        sys.meta_path.remove(finder)
        package = sys.modules.get(_PACKAGE)
        for fullname in _DEFERRED_MODULES:
            if getattr(sys.modules.get(fullname), "__loader__", None) is finder:
                del sys.modules[fullname]
                if package is not None and hasattr(package, fullname.rpartition(".")[2]):
                    delattr(package, fullname.rpartition(".")[2])


def ensure_converters(op_types: Iterable[str]) -> None:
    """Import (and so register) the deferred converter modules that ``op_types`` need; the others stay unloaded."""
    for op_type in set(op_types) & DEFERRED_OPS.keys():
        importlib.import_module(f"{_PACKAGE}.{DEFERRED_OPS[op_type]}")  # a no-op once imported


_import_without_torchvision()
