"""Scan settings: built-in defaults < config file < command-line flags.

The config file is the first of: ``--config FILE``; ``leakaudit.toml`` in the working directory;
``[tool.leakaudit]`` in the working directory's ``pyproject.toml``. Only one file is read (no merging of
several files, so what applies is easy to tell). Keys are the long option names, with ``-`` or ``_``
(``batch-size`` or ``batch_size``); lists may be TOML arrays or comma-separated strings. A relative
``rules`` file path and ``reference-data`` are resolved against the config file's folder; ``output-dir`` against
the working directory (where CI looks for artifacts). ``leakaudit scan`` and ``sweep`` print the settings a file
gave (``ConfigFile.applied``) on stderr unless --quiet, and a scan records them in its report's notes.
"""

from __future__ import annotations

import difflib
import json
import math
import shlex
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError, LeakauditError, argument_ref, setting_ref
from .userfiles import LOADER_KEYWORDS, parse_toml, read_user_text

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH_ARGS = setting_ref("arch_args")
ATTACK_ITERATIONS = setting_ref("attack_iterations")
CONFIG = argument_ref("config")
DROPOUT = setting_ref("dropout")

# Upper bounds, so that a typo (or 1e30) is refused at once instead of running for years or overflowing:
# thorough budgets run 24,000 iterations and 4 restarts; restarts are optimised together (memory grows with
# them); seeds are 32-bit, so seed + restart index stays within every RNG's range (torch, numpy).
MAX_ITERATIONS = 1_000_000
MAX_RESTARTS = 64
MAX_LOCAL_STEPS = 10_000
MAX_SEED = 2**32 - 1
MAX_WORKERS = 1024  # local worker processes: more is a typo (each loads the model)
MAX_INPUT_ELEMENTS = 3 * 2048 * 2048  # one sample; gradient inversion is run on far smaller images


@dataclass(frozen=True)
class ScanSettings:
    """Everything a scan needs besides the model and data paths. Defaults are the built-in ones."""

    arch: str | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)  # --arch-arg KEY=VALUE: the factory's own arguments
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    dropout: dict[str, float] = field(default_factory=dict)  # layer name -> rate the export removed
    no_dropout: bool = False  # the user states the model trains without dropout (nothing for an export to remove)
    # Audit an ONNX file whose BatchNorm the exporter folded into convolutions (refused otherwise): the verdict is
    # then about the folded function, which the report says wherever it states the verdict.
    allow_folded_batchnorm: bool = False
    normalize: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    rules: str = "default"  # built-in profile name or a rule file path
    # Suppressions (leakaudit.suppress): an [[ignore]] file; None: none (scan: the model folder's
    # .leakaudit-ignore.toml, when there is one, is filled in here before the scan)
    ignore_file: str | None = None
    attacks: tuple[str, ...] = ()  # empty = auto (the planner picks what fits the model)
    all_attacks: bool = False  # auto plan: run every planned attack even after a leak settled the verdict
    budget: str = "standard"
    iterations: int | None = None  # overrides every attack's budget
    restarts: int | None = None
    # Iterations of named attacks (attack -> N): pinned, not fitted to the time; a report's reproduce command
    # pins the iterations its attacks were fitted to this way
    attack_iterations: dict[str, int] = field(default_factory=dict)
    # The scan's wall-clock cap in seconds (None: the budget's, attacks.clock.BUDGET_SECONDS)
    max_time: float | None = None
    defenses: tuple[str, ...] = ()  # "noise:sigma=0.01", applied in order
    batch_size: int | None = None  # None: 1, or the smallest the model's BatchNorm layers can train with
    samples: int | None = None  # None: every sample given; N: N drawn with the seed (leakaudit.coverage)
    # References of the recognition test (metrics.recognition): a folder of images like the samples; None: the
    # bundled reference set. The scan's other samples are references either way.
    reference_data: str | None = None
    tokenizer: str | None = None
    freeze: tuple[str, ...] = ()
    # Tabular records (leakaudit.data.tabular): the schema of a CSV's columns (None: inferred), and the label
    # column when it is inferred (None: the last column)
    schema: str | None = None
    label_column: str | None = None
    utility_data: str | None = None  # held-out samples the defense cost is also measured on (with defenses)
    local_steps: int = 1
    local_lr: float = 0.1
    protocol: str | None = None  # None: fedsgd, or fedavg when local_steps > 1
    labels_known: bool = False
    # The client's BatchNorm layers: "train" (batch statistics) or "eval" (frozen running statistics)
    client_batchnorm: str = "train"
    # Whether the update carries the BatchNorm running statistics ("yes": the whole state_dict, as Flower sends by
    # default; "no": trainable parameters only)
    update_buffers: str = "no"
    # The batch the clients really train with (None: not stated); the report compares it with the audited one
    client_batch_size: int | None = None
    device: str = "auto"
    # Where the client batches run (leakaudit.coverage.executors); never what they find: their rows' role
    # "execution" leaves them out of the reproduce command, the report's settings and what --resume compares.
    executor: str = "inprocess"
    workers: int | None = None  # --executor processes: None is one per CPU, at most one per batch
    # torch threads of each running batch; None: OMP_NUM_THREADS, else the CPUs available divided among the
    # batches running at once (coverage.executors.choose_threads)
    threads: int | None = None
    ray_address: str | None = None  # --executor ray: None starts a local Ray instance
    seed: int = 0  # fixed by default: a CI gate must not flip between runs
    output_dir: str = "leakaudit-report"
    formats: tuple[str, ...] = ("json", "html")
    strict: bool = False
    exit_zero: bool = False
    embed_data: bool = False
    quiet: bool = False

    @property
    def resolved_protocol(self) -> str:
        return self.protocol or ("fedavg" if self.local_steps > 1 else "fedsgd")


SETTING_NAMES = tuple(f.name for f in fields(ScanSettings))


# --------------------------------------------------------------------------------------------------
# Parsing of single values (shared by the CLI flags and the config file)
# --------------------------------------------------------------------------------------------------


def split_list(value: Any, where: str) -> tuple[str, ...]:
    """``"ig, dia"`` or ``["ig", "dia"]`` -> ("ig", "dia")."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"{where}: expected a list or a comma-separated string, got {value!r}; write e.g. \"a,b\"")
    return tuple(v for v in items if v)


def parse_shape(value: Any, where: str) -> tuple[int, ...]:
    """``"3,32,32"``, ``"3x32x32"`` or ``[3, 32, 32]`` -> (3, 32, 32)."""
    items = split_list(value.replace("x", ",") if isinstance(value, str) else value, where)
    try:
        shape = tuple(int(v) for v in items)
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(f"{where}: {value!r} is not a shape; give positive integers like 3,32,32 (C,H,W) or 784")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:  # every sample, reconstruction and restart is one of these
        raise ConfigError(f"{where}: {value!r} has {math.prod(shape):,} values per sample, more than the "
                          f"{MAX_INPUT_ELEMENTS:,} leakaudit accepts; give the model's real input shape, e.g. 3,32,32")
    return shape


def parse_floats(value: Any, where: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in split_list(value, where))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a list of numbers; write e.g. 0.5,0.5,0.5") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{where}: {value!r} holds a value that is not finite; give finite numbers, e.g. 0.5,0.5,0.5")
    return numbers


MAX_ARCH_ARG_DEPTH = 32  # [[...]] nesting of one --arch-arg value: shapes and lists need two or three


def parse_arch_args(items: Any, where: str) -> dict[str, Any]:
    """``["img_size=32", "num_classes=10"]`` or a TOML table -> {"img_size": 32, "num_classes": 10}; a value is
    read as a TOML literal (32, 0.1, true, "text", [4, 4]) and otherwise kept as text."""
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        pairs = []
        for item in [items] if isinstance(items, str) else items:
            key, sep, text = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: {item!r} is not KEY=VALUE; write e.g. {ARCH_ARGS} img_size=32")
            pairs.append((key.strip(), _literal(text.strip(), f"{where}: {key.strip()}")))
    for key, value in pairs:
        if not key.isidentifier():
            raise ConfigError(f"{where}: {key!r} is not an argument name; write e.g. {ARCH_ARGS} img_size=32")
        if _depth(value) > MAX_ARCH_ARG_DEPTH:
            raise ConfigError(f"{where}: {key}: nested more than {MAX_ARCH_ARG_DEPTH} deep; give a flat value, "
                              f"e.g. {ARCH_ARGS} patch_size=[4, 4]")
    return dict(pairs)


def refuse_loader_keywords(args: Mapping[str, Any], where: str) -> None:
    """A config file may not give a factory keyword that opens or downloads a file (``LOADER_KEYWORDS``)."""
    found = sorted(k for k in args if k in LOADER_KEYWORDS)
    if found:  # only a config file gets here, and the fix is the command line itself: its flag, written out
        raise ConfigError(f"{where}: {found[0]} makes the architecture's factory open or download a file, which "
                          f"only the command line may ask for; remove it, or give --arch-arg {found[0]}=... on "
                          "the command line if you mean it")


def _depth(value: Any) -> int:
    """How deeply lists and tables nest in ``value`` (without recursion: a hostile value may be very deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_ARCH_ARG_DEPTH:
            break
        if isinstance(item, Mapping):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _literal(text: str, where: str) -> Any:
    import tomllib

    opened = depth = 0
    for char in text:  # before the parser: tomllib recurses once per level
        if char in "[{":
            opened += 1
            depth = max(depth, opened)
        elif char in "]}":
            opened -= 1
    if depth > MAX_ARCH_ARG_DEPTH:
        raise ConfigError(f"{where}: nested more than {MAX_ARCH_ARG_DEPTH} deep; give a flat value, e.g. "
                          f"{ARCH_ARGS} patch_size=[4, 4]")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def _name_value_pairs(items: Any, where: str, form: str, example: str) -> list[tuple[str, Any]]:
    """``["a=1", "b=2"]``, ``"a=1,b=2"`` or a TOML table -> [("a", "1"), ("b", "2")] (values as given); an item
    without ``=`` is an error naming ``form`` (e.g. LAYER=P) and an ``example``."""
    if isinstance(items, Mapping):
        return list(items.items())
    pairs = []
    for item in split_list(items, where) if isinstance(items, str) else items:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{where}: {item!r} is not {form}; write e.g. {example}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_dropout(items: Any, where: str) -> dict[str, float]:
    """``["fc1=0.5", "fc2=0.25"]`` or a TOML table ``{fc1 = 0.5}`` -> {"fc1": 0.5, "fc2": 0.25}."""
    out: dict[str, float] = {}
    for name, p in _name_value_pairs(items, where, "LAYER=P", f"{DROPOUT} fc1=0.5"):
        try:
            rate = float(p)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: rate {p!r} of layer {name!r} is not a number; write e.g. {name}=0.5") from None
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{where}: rate {rate:g} of layer {name!r} is outside [0, 1); give a dropout probability")
        out[str(name)] = rate
    return out


def parse_attack_iterations(items: Any, where: str) -> dict[str, int]:
    """``["ig=1200", "dia=800"]`` or a TOML table ``{ig = 1200}`` -> {"ig": 1200, "dia": 800}."""
    pairs = _name_value_pairs(items, where, "ATTACK=N", f"{ATTACK_ITERATIONS} ig=1200")
    return {str(name): _number(n, int, f"{where} {name}", minimum=1, maximum=MAX_ITERATIONS) for name, n in pairs}


def _seconds(value: Any, where: str) -> float:
    number = _number(value, float, where)
    if number <= 0:
        raise ConfigError(f"{where}: {value!r} must be > 0; give the scan's time cap in seconds, e.g. 600")
    return float(number)


_KIND_NAMES = {int: "an integer", float: "a number"}


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {_fmt(minimum)} to {_fmt(maximum)}"
    return f" >= {_fmt(minimum)}" if minimum is not None else ""


def _number(value: Any, kind: type, where: str, *, minimum: float | None = None,
            maximum: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: {value!r} is not a number; give {_KIND_NAMES[kind]}")
    if isinstance(value, float) and not math.isfinite(value):  # TOML inf/nan, or 1e400
        raise ConfigError(f"{where}: {value!r} is not finite; give {_KIND_NAMES[kind]}{_range(minimum, maximum)}")
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not {_KIND_NAMES[kind]}; give e.g. {kind(1)}") from None
    if isinstance(number, float) and not math.isfinite(number):  # the string "inf"
        raise ConfigError(f"{where}: {value!r} is not finite; give {_KIND_NAMES[kind]}{_range(minimum, maximum)}")
    if kind is int and isinstance(value, float) and value != int(value):
        raise ConfigError(f"{where}: {value!r} is not an integer; give a whole number")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{where}: {value!r} is below {_fmt(minimum)}; give a value >= {_fmt(minimum)}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{where}: {value!r} is above {_fmt(maximum)}, the most leakaudit accepts; "
                          f"give a value <= {_fmt(maximum)}")
    return number


def _defenses(value: Any, where: str) -> tuple[str, ...]:
    """Each spec parsed here, so a bad one in a config file is named by its file and key, not --defense."""
    given = [value] if isinstance(value, str) else value
    if isinstance(given, (list, tuple)) and any(isinstance(v, str) and not v.strip() for v in given):
        raise ConfigError(f"{where}: an empty defense ''; give NAME:K=V, e.g. noise:sigma=0.01, or leave it out")
    items = split_list(value, where)
    from .update.defenses import parse_defense  # the defense registry owns the specs; torch: only when given

    for item in items:
        parse_defense(item, where=where)
    return items


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not true/false; write true or false (TOML booleans, no quotes)")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {value!r} must be a non-empty string; give a name or a path")
    return value.strip()


def _folder(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {value!r} must be a folder path; give e.g. \"leakaudit-report\"")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    return tuple(i.lower() for i in split_list(value, where))


def _prefixes(value: Any, where: str) -> tuple[str, ...]:
    return tuple(i.strip() for i in split_list(value, where) if i.strip())


def _attacks(value: Any, where: str) -> tuple[str, ...]:
    names = _names(value, where)
    return () if names in (("auto",), ()) else names  # empty: the planner picks


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any, str], int]:
    return lambda value, where: _number(value, int, where, minimum=minimum, maximum=maximum)


def _samples(value: Any, where: str) -> int | None:
    """``all`` (every sample given) or a positive count."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        raise ConfigError(f"{where}: {value!r} is not a number of samples; give N (e.g. 100) or all")
    return _number(value, int, where, minimum=1)


def _learning_rate(value: Any, where: str) -> float:
    number = _number(value, float, where)
    if number <= 0:
        raise ConfigError(f"{where}: {value!r} must be > 0; give a positive learning rate")
    return number


# The settings whose valid values a stage owns are checked by that stage: the names change there (a new budget,
# preset or device kind), and config files, flags and Python callers then all get the same answer. Imported
# when a value is checked: they import torch, which only a scan needs.
def _budget(value: Any, where: str) -> str:
    from .attacks.planner import check_budget

    return check_budget(value, where)


def _normalize(value: Any, where: str) -> str:
    from .data.normalize import check_preset

    return check_preset(value, where)


def _device(value: Any, where: str) -> str:
    from .attacks.device import device_spec

    return device_spec(value, where)


def _client_batchnorm(value: Any, where: str) -> str:
    from .models.batchnorm import check_client_batchnorm

    return check_client_batchnorm(value, where)


def _yes_no(value: Any, where: str) -> str:
    if isinstance(value, bool):  # a TOML boolean
        return "yes" if value else "no"
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text not in ("yes", "no"):
        raise ConfigError(f"{where}: {value!r} is not yes or no; give yes (the update carries the BatchNorm running "
                          "statistics, as in frameworks that send the whole state_dict) or no")
    return str(text)


# Where coverage/executors.py runs the batches: named here, not there, because the settings table checks them
# and coverage/ sits above config in the layers (docs/architecture.md).
EXECUTORS = ("inprocess", "processes", "ray")


def check_executor(value: Any, where: str = setting_ref("executor")) -> str:
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in EXECUTORS:
        raise ConfigError(f"{where} {value}: not an executor; use one of {', '.join(EXECUTORS)}")
    return str(name)


def _protocol(value: Any, where: str) -> str:
    from .update.client import check_protocol

    return check_protocol(value, where)


ROLES = ("result", "execution", "presentation")


@dataclass(frozen=True)
class Setting:
    """One ``ScanSettings`` field, declared once: how it is checked, which flag and config keys give it, and
    how ``scan``/``sweep`` show it in ``--help``. The CLI builds its shared options from these rows
    (``cli/options.py``), the config file reads its keys from them, and ``setting_args`` writes a report's
    reproduce command with them, so one name (the field's) follows a flag from the command line to the engine."""

    name: str  # the ScanSettings field; also its config key, spelt with - or _
    flag: str  # the long option, e.g. "--budget"
    check: Callable[[Any, str], Any]  # value as given (flag text or TOML value), where -> the field's value
    help: str
    kind: type = str  # what the flag takes: str, int, float, bool, or list (a repeatable option of str)
    default: Any = None  # the flag's default as typed; coerce(name, default) is the ScanSettings default
    metavar: str | None = None
    short: str | None = None  # e.g. "-q"
    keys: tuple[str, ...] = ()  # config keys besides the field name (format for formats)
    commands: tuple[str, ...] = ("scan", "sweep")  # the commands that take the flag
    help_in: Mapping[str, str] = field(default_factory=dict)  # command -> its own --help text
    # What the setting is to a result (ROLES): "result" settings are what a report's reproduce command gives
    # again and what a resumed scan must share; "execution" ones choose where and how fast batches run and
    # "presentation" ones what is written where -- neither changes a finding, so both are left out of the
    # command and the checkpoint, and the report's settings leave out "execution" (it is the same report).
    role: str = "result"
    always: bool = False  # in the reproduce command even at its default (the seed: a rerun must not drift)

    def help_for(self, command: str) -> str:
        return self.help_in.get(command, self.help)

    def __post_init__(self) -> None:
        if self.role not in ROLES:  # a typo must not silently put a setting into (or out of) the checkpoint
            raise ValueError(f"setting {self.name}: role {self.role!r} is not one of {', '.join(ROLES)}")


_SEED_HELP = "Seed of the client's dropout/noise and of the attacks."
_ARCH_HELP = "Architecture for safetensors: a built-in name, file.py:factory, package.module:factory or timm:MODEL."

# The order is the order of --help. Help texts are the CLI's; the checks are the owners' (see _budget above).
SETTINGS: tuple[Setting, ...] = (
    Setting("arch", "--arch", _name, _ARCH_HELP),
    Setting("arch_args", "--arch-arg", parse_arch_args, "An argument of the --arch factory, e.g. img_size=32 "
            "(repeatable; TOML values).", kind=list, default=[], metavar="KEY=VALUE"),
    Setting("input_shape", "--input-shape", parse_shape, "One sample's shape, e.g. 3,32,32."),
    Setting("num_classes", "--num-classes", _integer(2), "Number of classes (if not in the file).", kind=int),
    Setting("dropout", "--dropout", parse_dropout, "LAYER=P: a dropout rate the export removed (repeatable).",
            kind=list, default=[], metavar="LAYER=P"),
    Setting("no_dropout", "--no-dropout", _bool, "The model trains without dropout: an ONNX file without Dropout "
            "nodes then gets no advice to declare rates.", kind=bool, default=False),
    Setting("allow_folded_batchnorm", "--allow-folded-batchnorm", _bool, "Audit an ONNX file whose BatchNorm the "
            "exporter folded into the convolutions (refused otherwise): the verdict is then about the folded "
            "function, not the client's train-mode model.", kind=bool, default=False),
    Setting("normalize", "--normalize", _normalize, "Input normalization: none, mnist, cifar10, imagenet.",
            default="none"),
    Setting("mean", "--mean", parse_floats, "Per-channel mean, e.g. 0.5,0.5,0.5 (with --std)."),
    Setting("std", "--std", parse_floats, "Per-channel std."),
    Setting("rules", "--rules", _name, "Rule profile (default, strict) or a rule TOML file.", default="default"),
    Setting("ignore_file", "--ignore-file", _name, "Suppression file: [[ignore]] entries with rule, model (sha256 or "
            "path glob), reason and expires (YYYY-MM-DD); an expired one fails the scan. Default: "
            ".leakaudit-ignore.toml beside the model, when there is one.", metavar="FILE", commands=("scan",)),
    Setting("attacks", "--attacks", _attacks, "auto (fit to the model) or a list, e.g. ig,dia.", default="auto",
            keys=("attack",)),
    Setting("all_attacks", "--all-attacks", _bool, "Run every planned attack, also after a leak settled the verdict "
            "(auto plan).", kind=bool, default=False),
    Setting("budget", "--budget", _budget, "quick, standard or thorough (the papers' settings): the attacks' "
            "iterations and the scan's time cap (--max-time).",
            default="standard"),
    Setting("iterations", "--iterations", _integer(1, MAX_ITERATIONS),
            "Iterations of every attack (overrides the budget).", kind=int),
    Setting("restarts", "--restarts", _integer(1, MAX_RESTARTS), "Restarts of every attack (overrides the budget).",
            kind=int),
    Setting("attack_iterations", "--attack-iterations", parse_attack_iterations, "ATTACK=N: the iterations of one "
            "attack, pinned rather than fitted to the time (repeatable; a report's reproduce command pins what "
            "its attacks ran).", kind=list, default=[], metavar="ATTACK=N"),
    Setting("max_time", "--max-time", _seconds, "Wall-clock cap of the whole scan in seconds (default: the "
            "budget's: quick 120, standard 900, thorough 3600). Attacks fit their iterations to their share of it; "
            "one that reaches the cap stops there, and the scan cannot pass.", kind=float, metavar="SECONDS"),
    Setting("defenses", "--defense", _defenses, "Simulated defense, e.g. noise:sigma=0.01 (repeatable, in order).",
            kind=list, default=[], metavar="NAME:K=V", keys=("defense",),
            help_in={"sweep": "Fixed simulated defense applied at every value (repeatable, in order); the varied one "
                              "replaces a defense of its kind."}),
    Setting("batch_size", "--batch-size", _integer(1), "Samples in the client's batch (default: 1, or the smallest "
            "the model's train-mode BatchNorm layers can run with).", kind=int),
    Setting("samples", "--samples", _samples, "How many samples to audit: all (default), or N drawn with the seed; "
            "they are split into client batches of --batch-size, each its own client update.", metavar="N|all",
            commands=("scan",)),
    Setting("reference_data", "--reference-data", _name, "Images a reconstruction must resemble its own sample more "
            "than (a folder or .npz; your own data is the best choice). Default: the bundled 64 natural images; the "
            "scan's other samples count too. For a text model: a lines.txt of reference lines (default: the bundled "
            "120 lines). Tabular records: a CSV with the scanned file's columns (default: the scanned file's other "
            "records alone).", metavar="DIR"),
    Setting("freeze", "--freeze", _prefixes, "Parameters the client does not train (repeatable; a name prefix, e.g. "
            "embedding or weights.embedding_weight): left out of the update, as a frozen token embedding is.",
            kind=list, default=[], metavar="PARAM_PREFIX"),
    Setting("tokenizer", "--tokenizer", _name, "A text model's tokenizer.json (the tokenizers library's file, the "
            "one the model was trained with): --data is then a text file with one sample per line. Needs "
            "pip install 'leakaudit[text]'.", metavar="FILE"),
    Setting("schema", "--schema", _name, "Tabular records: a JSON schema of the CSV's columns ({\"continuous\": "
            "[names], \"categorical\": {name: [categories in one-hot order]}, \"label\": name}; optional mean, "
            "std, classes). Default: inferred from the CSV (numeric columns continuous, the others categorical).",
            metavar="FILE"),
    Setting("label_column", "--label-column", _name, "Tabular records without --schema: the label column "
            "(default: the last column).", metavar="NAME"),
    Setting("utility_data", "--utility-data", _name, "Held-out samples with labels (a folder or .npz, not the "
            "scanned ones): with --defense the defense cost also gives the model's accuracy and loss on them after "
            "one server step with the defended and with the clean update.", metavar="DIR"),
    Setting("local_steps", "--local-steps", _integer(1, MAX_LOCAL_STEPS), "Local steps (>1: FedAvg weight update).",
            kind=int, default=1),
    Setting("local_lr", "--local-lr", _learning_rate, "Local learning rate (FedAvg).", kind=float, default=0.1),
    Setting("protocol", "--protocol", _protocol, "fedsgd or fedavg (default: fedavg when --local-steps > 1)."),
    Setting("labels_known", "--labels-known", _bool, "Give the attacker the true labels (stronger attacker).",
            kind=bool, default=False),
    Setting("client_batchnorm", "--client-batchnorm", _client_batchnorm, "The client's BatchNorm layers: train "
            "(the batch's own statistics, torch's training default) or eval (frozen running statistics; allows "
            "--batch-size 1).", default="train", metavar="train|eval"),
    Setting("update_buffers", "--update-buffers", _yes_no, "Whether the update carries the BatchNorm running "
            "statistics (yes: the client sends its whole state_dict, Flower's default; no: trainable parameters "
            "only). With yes the report measures what the server recovers from them.", default="no",
            metavar="yes|no"),
    Setting("client_batch_size", "--client-batch-size", _integer(1), "The batch your clients really train with, "
            "when it differs from the audited --batch-size: the report states what the difference implies.",
            kind=int),
    Setting("device", "--device", _device, "auto, cpu, cuda or cuda:N (GPU N).", default="auto"),
    Setting("executor", "--executor", check_executor, "Where the client batches run: inprocess, processes (local "
            "worker processes, --workers) or ray (pip install 'leakaudit\\[ray]'; a local Ray instance, or the "
            "cluster at --ray-address; a GPU per batch with --device cuda). The report does not depend on it.",
            default="inprocess", commands=("scan",), role="execution"),
    Setting("workers", "--workers", _integer(1, MAX_WORKERS), "Worker processes of --executor processes, each "
            "running --threads torch threads (default: the CPUs available divided by those threads, at least 1).",
            kind=int, commands=("scan",), role="execution"),
    Setting("threads", "--threads", _integer(1, MAX_WORKERS), "Torch threads of each batch (in this process, a "
            "worker or a Ray task); results can differ in the last digits between thread counts. Default: "
            "OMP_NUM_THREADS if set, else the CPUs available to this process (affinity, container quota) divided "
            "by --workers. The report's notes give the figure.", kind=int, commands=("scan",), role="execution"),
    Setting("ray_address", "--ray-address", _name, "Ray cluster to join with --executor ray, e.g. 10.0.0.5:6379 "
            "(the head node's 'ray start --head' address) or auto; default: start a local Ray instance.",
            metavar="HOST:PORT", commands=("scan",), role="execution"),
    Setting("seed", "--seed", _integer(0, MAX_SEED), _SEED_HELP, kind=int, default=0, always=True,
            help_in={"sweep": _SEED_HELP[:-1] + " (the same at every value)."}),
    Setting("output_dir", "--output-dir", _folder, "Folder for the reports.", default="leakaudit-report",
            role="presentation", help_in={"sweep": "Folder for sweep.json and sweep.html."}),
    Setting("formats", "--format", _names, "Report formats: json, html, junit, markdown, sarif (comma-separated).",
            default="json,html", keys=("format",), role="presentation",
            help_in={"sweep": "json (always written: --resume needs it) and/or html."}),
    Setting("quiet", "--quiet", _bool, "No progress or summary on stderr.", kind=bool, default=False, short="-q",
            role="presentation"),
    Setting("strict", "--strict", _bool, "A fail-severity rule that cannot be evaluated counts as a failure (a "
            "warn-severity one never does); a scan whose verdict is inconclusive (no reconstruction even without "
            "the defenses) exits 1, not 4.", kind=bool,
            default=False),
    Setting("exit_zero", "--exit-zero", _bool, "Exit 0 even when a leak is found (report-only runs).", kind=bool,
            default=False, role="presentation", help_in={"sweep": "Exit 0 even when no tested setting passes."}),
    Setting("embed_data", "--embed-data", _bool, "Embed the original samples in the reports.", kind=bool,
            default=False, role="presentation", commands=("scan",)),
)
SETTING = {s.name: s for s in SETTINGS}
# Derived from the rows' roles, for readers that name a group: how a scan runs, not what it finds (a report, its
# reproduce command and a checkpoint are the same whatever these are: tests/coverage/test_coverage_executors.py),
# and what is written where.
EXECUTION = tuple(s.name for s in SETTINGS if s.role == "execution")
PRESENTATION = tuple(s.name for s in SETTINGS if s.role == "presentation")


def settings_in_roles(settings: ScanSettings | Mapping[str, Any], *roles: str) -> dict[str, Any]:
    """The fields of ``settings`` (a ``ScanSettings`` or a dict of its fields) whose rows have one of ``roles``,
    in field order: ``("result",)`` is what a resumed scan or sweep must share with its first run,
    ``("result", "presentation")`` the report's settings."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; use {', '.join(ROLES)}")
    raw = asdict(settings) if isinstance(settings, ScanSettings) else dict(settings)
    return {k: v for k, v in raw.items() if k not in SETTING or SETTING[k].role in roles}


def coerce(name: str, value: Any, where: str | None = None) -> Any:
    """Validate and convert one setting to the ScanSettings field type, by the check its row names. ``where``
    names it in errors (``leakaudit.toml budget`` for a config key); left out, the error names the setting
    (``budget: ...``) and carries it as ``error.setting``, which the CLI shows as the flag (``--budget: ...``)."""
    if value is None:
        return None
    try:
        return SETTING[name].check(value, where or name)
    except LeakauditError as e:
        if where is None and e.setting is None:
            e.setting = name
        raise


def setting_args(settings: ScanSettings) -> list[str]:
    """The flags that give ``settings`` again (every "result" row not at its default, and the ``always`` ones),
    in the table's order: the inverse of the flags' parsing, e.g. ``["--budget", "quick", "--seed", "0"]``."""
    defaults = ScanSettings()
    args: list[str] = []
    for s in SETTINGS:
        value = getattr(settings, s.name)
        if s.role != "result" or value is None or (not s.always and value == getattr(defaults, s.name)):
            continue
        args += _flag_args(s, value)
    return args


def _flag_args(s: Setting, value: Any) -> list[str]:
    """The flags that give one setting ``value`` (a false boolean: none)."""
    if isinstance(value, bool):
        return [s.flag] if value else []
    if isinstance(value, Mapping):  # KEY=VALUE items, the value as a TOML literal (JSON's are TOML's)
        return [a for key, item in value.items() for a in (s.flag, f"{key}={json.dumps(item)}")]
    if s.kind is list:
        return [a for item in value for a in (s.flag, str(item))]
    if isinstance(value, tuple):
        return [s.flag, ",".join(map(str, value))]
    if isinstance(value, float) and value.is_integer():  # --max-time 120, not 120.0
        return [s.flag, str(int(value))]
    return [s.flag, str(value)]


# --------------------------------------------------------------------------------------------------
# Config files
# --------------------------------------------------------------------------------------------------


# The report's note (and the terminal's line) that names the settings a config file gave a scan.
CONFIG_NOTE = "settings from"


@dataclass(frozen=True)
class ConfigFile:
    path: Path | None  # None: no config file applies
    values: dict[str, Any]  # validated, keyed by ScanSettings field name
    labels: dict[str, str] = field(default_factory=dict)  # field name -> "pyproject.toml [tool.leakaudit] seed"
    where: str = ""  # how messages name the file: "pyproject.toml [tool.leakaudit]", "leakaudit.toml"

    def applied(self, flags: Mapping[str, Any]) -> str:
        """One line that names the settings this file gave the run (those not overridden by a flag), written as
        the flags they equal, e.g. "settings from pyproject.toml [tool.leakaudit] (flags win): --defense
        noise:sigma=1.0"; "" when it gave none. The CLI prints it and records it in the report: a defense or
        rule profile from a file changes the verdict with an unchanged command line."""
        used = [(SETTING[name], value) for name, value in self.values.items() if name not in flags]
        if not used:
            return ""
        shown = " ".join(shlex.quote(a) for s, value in used
                         for a in (_flag_args(s, value) or [f"{s.flag}=false"]))
        return f"{CONFIG_NOTE} {self.where or self.path} (flags win): {shown}"

    @contextmanager
    def attributed(self, flags: Mapping[str, Any]) -> Iterator[None]:
        """Re-raise an error that names a flag (``--dropout fc=0.5: ...``) by the config key that really gave
        the value, when the flag was not on the command line: the user never typed ``--dropout``."""
        try:
            yield
        except LeakauditError as e:
            shown = e.shown(option_of)
            # a setting the message names later that the file gave (no flag did) is named by its key too
            keys = {name: label.removeprefix(f"{self.where} ") for name, label in self.labels.items()
                    if name not in flags}
            keyed = e.shown(lambda name: keys.get(name) or option_of(name))
            message = self.attribute(shown, flags, keyed)
            if message == shown:
                raise
            try:
                renamed = type(e)(message)
            except TypeError:  # a subclass with a constructor of its own: the original message, unchanged
                raise e from e.__cause__
            raise renamed from e

    def attribute(self, message: str, flags: Mapping[str, Any], keyed: str | None = None) -> str:
        """``message`` (as the CLI shows it) starting with the file and key instead of the flag when the file gave
        that setting; ``keyed``: the same message with the other settings the file gave named by their keys."""
        for name, label in self.labels.items():
            flag = flag_of(name)
            if name not in flags and message.startswith(flag) and message[len(flag):][:1] in (" ", ":"):
                key = label.removeprefix(f"{self.where} ")
                if keyed is not None and keyed.startswith(key) and keyed[len(key):][:1] in (" ", ":"):
                    return label + keyed[len(key):]
                return label + message[len(flag):]
        return keyed if keyed is not None else message


def flag_of(name: str) -> str:
    """The command-line option of a ScanSettings field (``formats`` -> ``--format``)."""
    return SETTING[name].flag


# The inputs a core message marks (``errors.argument_ref``) that are not ScanSettings fields, with the option the
# CLI gives each by: a Python caller passes them as arguments (``audit(model, data)``, ``load_config(path)``,
# ``run_sweep(vary, ...)``) or not at all (a checkpoint or sweep.json to resume, a report file: the CLI's).
ARGUMENTS = {"data": "--data", "config": "--config", "output": "--output", "resume": "--resume", "vary": "--vary"}


def option_of(name: str) -> str:
    """How the CLI names a setting or input a message marks: its option (``batch_size`` -> ``--batch-size``,
    ``data`` -> ``--data``); an unknown name as it is."""
    return SETTING[name].flag if name in SETTING else ARGUMENTS.get(name, name)


def _canonical_key(key: str, where: str) -> str:
    name = key.replace("-", "_")
    name = next((s.name for s in SETTINGS if name in s.keys), name)
    if name not in SETTING_NAMES:
        options = sorted({n.replace("_", "-") for n in SETTING_NAMES} | {"format"})
        close = difflib.get_close_matches(key.replace("_", "-"), options, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(options)}")
    return name


def parse_config(table: Mapping[str, Any], where: str, base: Path | None,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Validated values by field name; ``labels`` (when given) receives how errors name each key."""
    values: dict[str, Any] = {}
    for key, raw in table.items():
        name = _canonical_key(str(key), where)
        if labels is not None:
            labels[name] = f"{where} {key}"
        value = coerce(name, raw, f"{where} {str(key)}")
        if name in ("reference_data", "utility_data", "tokenizer", "schema") and base is not None \
                and not Path(value).is_absolute():
            value = str(base / value)
        if name == "arch_args":
            refuse_loader_keywords(value, f"{where} {str(key)}")
        if name == "rules" and base is not None and _looks_like_path(value):
            candidate = base / value
            value = str(candidate) if not Path(value).is_absolute() else value
        values[name] = value
    return values


def _looks_like_path(value: str) -> bool:
    return value.endswith(".toml") or "/" in value or "\\" in value


def _read_toml(path: Path) -> dict[str, Any]:
    text = read_user_text(path, ConfigError, missing=f"{path}: config file not found; check the {CONFIG} path",
                          unreadable=f"{path}: cannot read config file ({{e}}); give a readable UTF-8 TOML file")
    return parse_toml(text, str(path), ConfigError, "fix the syntax")


_SECTION = "[tool.leakaudit]"


def _table(doc: dict[str, Any], path: Path, *, required: bool) -> tuple[dict[str, Any], str] | None:
    """A file's settings and how errors name where they are: its ``[tool.leakaudit]`` table (always so for a
    pyproject.toml, or when the file has a ``[tool]`` table), else the whole file."""
    if "tool" not in doc and path.name != "pyproject.toml":
        return doc, str(path)
    tool = doc.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: tool = {tool!r} is not a table, so it cannot hold {_SECTION}; "
                          f"make [tool] a table (write {_SECTION} then key = value lines)")
    table = tool.get("leakaudit")
    if table is None:
        if required:
            raise ConfigError(f"{path}: no {_SECTION} table; add one or point {CONFIG} at a leakaudit.toml")
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {_SECTION} must be a table, not {table!r}; write {_SECTION} then "
                          "key = value lines")
    return table, f"{path} {_SECTION}"


def load_config(explicit: str | Path | None = None, cwd: Path | None = None) -> ConfigFile:
    """Find and read the one config file that applies (see the module docstring)."""
    cwd = cwd or Path.cwd()
    if explicit is not None:
        path = Path(explicit)
        table, where = _table(_read_toml(path), path, required=True) or ({}, str(path))
        labels: dict[str, str] = {}
        return ConfigFile(path, parse_config(table, where, path.parent, labels), labels, where)
    for name, required in (("leakaudit.toml", True), ("pyproject.toml", False)):
        path = cwd / name
        if path.exists():  # not is_file(): a folder or FIFO of that name is refused, not silently skipped
            found = _table(_read_toml(path), Path(name), required=required)
            if found is not None:
                labels = {}
                return ConfigFile(path, parse_config(found[0], found[1], cwd, labels), labels, found[1])
    return ConfigFile(None, {})


def resolve_settings(config: ConfigFile, flags: Mapping[str, Any]) -> ScanSettings:
    """Defaults < config file < flags. ``flags`` holds only the options given on the command line."""
    values = dict(config.values)
    for name, value in flags.items():
        values[name] = value
    return replace(ScanSettings(), **values)
