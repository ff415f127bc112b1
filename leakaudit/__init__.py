"""leakaudit: audit federated-learning models for gradient-inversion leakage.

The Python API (``docs/api.md``): ``leakaudit.audit(model, data, **settings) -> AuditResult``, or ``prepare``
once and ``run`` under several settings. Its names are imported on first use, so ``import leakaudit`` (and every
CLI command that needs no model) does not import torch. ``leakaudit.audit`` is the module ``leakaudit/audit.py``
(code has long imported it by that name), made callable as its ``audit`` function; type checkers know the
function as ``leakaudit.audit.audit``.
"""

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    "prepare": "leakaudit.audit",
    "run": "leakaudit.audit",
    "Prepared": "leakaudit.audit",
    "ScanSettings": "leakaudit.config",
    "AuditResult": "leakaudit.result",
    "SampleBatch": "leakaudit.data.interface",
    "LoadedModel": "leakaudit.models.interface",
    "LeakauditError": "leakaudit.errors",
    "ConfigError": "leakaudit.errors",
    "InputError": "leakaudit.errors",
    "ModelError": "leakaudit.errors",
    "DataError": "leakaudit.errors",
}

__all__ = ["AuditResult", "ConfigError", "DataError", "InputError", "LeakauditError", "LoadedModel", "ModelError",
           "Prepared", "SampleBatch", "ScanSettings", "__version__", "audit", "prepare", "run"]

# Not typing.TYPE_CHECKING: the console script imports this module before it can catch a Ctrl-C, so it imports
# nothing (tests/cli/test_cli_boundary.py); type checkers treat a name TYPE_CHECKING as true all the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import audit as audit
    from .audit import Prepared, prepare, run
    from .config import ScanSettings
    from .data.interface import SampleBatch
    from .errors import ConfigError, DataError, InputError, LeakauditError, ModelError
    from .models.interface import LoadedModel
    from .result import AuditResult


def __getattr__(name: str) -> object:
    if name == "audit":  # the submodule (callable); importing it makes it this package's attribute
        import importlib

        return importlib.import_module("leakaudit.audit")
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | {"audit"})
