"""The Python API: ``audit(model, data, ...) -> AuditResult``, the whole pipeline without the CLI.

load -> detect -> samples -> client update (+ defenses) -> labels -> plan -> attacks -> score -> positive control
(the attacks' power without the defenses: a pass must be earned) -> verdict.

The result is typed and frozen. It keeps tensors (reconstructions and originals in pixel space) for Python
callers; the report layer (``leakaudit.report``) turns it into the versioned JSON document that every
output format is rendered from. The core never prints: progress goes to an ``Observer``.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
import types
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeAlias, TypeGuard, cast

import torch

from .config import ScanSettings
from .data.interface import SampleBatch
from .detect.interface import Findings
from .errors import ConfigError, InputError, LeakauditError, setting_ref
from .progress import AttackProgress, NullObserver, Observer
from .metrics.scoring import SampleScore  # noqa: F401 -- part of this module's API, as before
from .result import (AttackOutcome, AuditResult, ControlOutcome, DataCard, LabelOutcome, ModelCard,  # noqa: F401
                     RuleOutcome)
from .update.interface import ThreatModel

if TYPE_CHECKING:  # the stages' types, for annotations only: the stages themselves are imported when they run
    from torch import nn

    from .attacks.bnstats import RecoveredLayer
    from .attacks.clock import Clock
    from .attacks.interface import AttackSettings, AttackTarget, GroundTruth, PlannedAttack, Reconstruction
    from .coverage.executors import ModelSource
    from .coverage.run import OnBatch, Plan
    from .metrics.references import ScanReferences
    from .metrics.scoring import AttackScore
    from .models.interface import LoadedModel
    from .result import BatchCoverage, BufferLeak, Conditioning, SampleCoverage
    from .suppress import Entry, SuppressionOutcome
    from .update.cost import DefenseCost
    from .update.interface import ClientUpdate, LocalTraining
    from .verdict.evaluate import Status, Verdict
    from .verdict.rules import RuleSet

    # What a Python caller may pass as the model and the samples (``audit``'s docstring); anything else is
    # refused with a ConfigError/DataError naming what was given.
    ModelInput: TypeAlias = str | os.PathLike[str] | LoadedModel | nn.Module
    DataInput: TypeAlias = str | os.PathLike[str] | SampleBatch | Sequence[torch.Tensor]
    # a checkpoint's batch and sample records, not run again
    Restored: TypeAlias = tuple[Sequence[BatchCoverage], Sequence[SampleCoverage]]

# ---------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------

# Always computed: the raw similarities, and the recognition test every verdict and control rests on; rules add
# the metrics they need.
DISPLAY_METRICS = ("ssim", "psnr", "mse", "match_p", "ssim_skill", "psnr_gain")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _settings(settings: ScanSettings | None, overrides: dict[str, Any]) -> ScanSettings:
    settings = settings or ScanSettings()
    unknown = sorted(set(overrides) - {f for f in ScanSettings.__dataclass_fields__})
    if unknown:
        raise TypeError(f"audit() got unknown setting(s) {', '.join(unknown)}; see leakaudit.config.ScanSettings")
    return replace(settings, **overrides)


@dataclass(frozen=True)
class Prepared:
    """A model, its findings and a batch, loaded and checked once: what ``run`` audits.

    ``audit`` is ``prepare`` then ``run``; ``leakaudit sweep`` prepares once and runs once per knob value.
    ``settings`` are the ones prepared with (the batch size resolved); ``notes`` say what leakaudit chose.
    """

    model: LoadedModel
    batch: SampleBatch
    findings: Findings
    ruleset: RuleSet | None = None  # None: run loads settings.rules
    settings: ScanSettings | None = None
    notes: tuple[str, ...] = ()
    # Every batch the scan covers (``coverage.run.Plan``); ``batch`` is its first. None: ``batch`` alone (a
    # sweep audits the first batch at every value).
    plan: Plan | None = None
    # How worker processes load the model again (``coverage.executors.ModelSource``); None: the model was given
    # in memory, and workers receive it pickled.
    source: ModelSource | None = None
    # What each sample's reconstruction must resemble it more than (``metrics.references.ScanReferences``): the
    # reference set and every sample of the plan. None: built from the batch when run.
    references: ScanReferences | None = None
    # The command line that repeats the scan when a Python caller gave paths (``run`` uses it when given none),
    # else why there is none (``AuditResult.command_reason``).
    command: str = ""
    command_reason: str = ""


def prepare(model: ModelInput, data: DataInput, settings: ScanSettings | None = None, *,
            observer: Observer | None = None, **overrides: Any) -> Prepared:
    """Every cheap check first (``preflight``), then load the model, detect its layers and load the batch.

    Raises ``LeakauditError`` subclasses for bad inputs, before any attack runs; never prints. Prepare once,
    then ``run`` under several settings, e.g. the same model with and without a simulated defense (paths to a
    model file and a sample folder work as in ``audit``; here an in-memory model and batch):

    >>> import torch
    >>> from pathlib import Path
    >>> from leakaudit.data import SampleBatch, normalization
    >>> from leakaudit.models import LoadedModel, create_model
    >>> _ = torch.manual_seed(0)
    >>> net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    >>> model = LoadedModel(net, (1, 8, 8), 4, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    >>> pixels = torch.rand(1, 1, 8, 8)  # one grey 8x8 sample in [0, 1], label 2
    >>> batch = SampleBatch(pixels, torch.tensor([2]), pixels, ("a.png",), "in memory",
    ...                     normalization("none", channels=1))
    >>> prepared = prepare(model, batch, attacks=("analytic",))
    >>> for sigma in (0.0001, 1.0):
    ...     result = run(prepared, ScanSettings(attacks=("analytic",), defenses=(f"noise:sigma={sigma}",)))
    ...     print(sigma, result.overall)
    0.0001 fail
    1.0 pass

    The pass is earned: the positive control re-ran the attack on the undefended update and reconstructed.
    """
    settings = _settings(settings, overrides)
    observer = observer or NullObserver()
    ruleset = preflight(settings)
    loaded = _load_model(model, settings, observer, data)
    _check_folded_batchnorm(loaded, settings)
    observer.stage("detect", "dropout, PRECODE bottlenecks, BatchNorm, stochastic layers")
    from .detect import detect

    findings = detect(loaded, tabular=_records_given(data, settings))
    _check_modality(findings)
    if settings.no_dropout:  # the user said there is no dropout an export could have removed
        from .detect import EVAL_EXPORT_WARNING

        stated = EVAL_EXPORT_WARNING.format(path=loaded.path)
        findings = replace(findings, warnings=tuple(w for w in findings.warnings if w != stated))
    from .coverage.executors import model_source

    # A model given in memory has no file a worker could load: workers receive it pickled.
    source = model_source(loaded, settings) if _is_path(model) else None
    # The client's BatchNorm mode decides the batch sizes it can train at (eval: any), so it comes before them.
    loaded, findings = _client_model(loaded, findings, settings)
    settings, batch_note = _batch_size(loaded, settings)
    plan = _load_plan(data, loaded, settings, observer, chosen=batch_note, tabular=findings.modality == "tabular")
    notes = tuple(note for note in (batch_note, _flat_note(plan), _schema_note(plan)) if note)
    command, reason = _command(model, data, settings)
    return Prepared(loaded, plan.batches[0], findings, ruleset, settings, notes, plan, source,
                    _references(plan, settings), command, reason)


def _takes_text(loaded: LoadedModel) -> bool:
    """A model whose input is token ids into an embedding (``detect.modality``): its samples are lines."""
    from .models.text import token_embedding

    return len(loaded.input_shape) == 1 and token_embedding(loaded.module) is not None


def _load_text(data: DataInput, loaded: LoadedModel, settings: ScanSettings) -> SampleBatch:
    from .data.text import load_text
    from .models.text import text_task, token_embedding

    assert _is_path(data), "text samples are read from a file"
    emb = token_embedding(loaded.module)
    return load_text(os.fspath(data), tokenizer=settings.tokenizer, seq_len=int(loaded.input_shape[0]),
                     embedding_rows=emb.vocab_size if emb is not None else 0,
                     task=text_task(loaded.module, int(loaded.input_shape[0])), num_classes=loaded.num_classes)


def _records_given(data: DataInput, settings: ScanSettings) -> bool:
    """Whether the samples are tabular records: what a flat input vector cannot tell by itself."""
    if settings.schema is not None:
        return True
    if _is_path(data):
        return os.fspath(data).lower().endswith(".csv")
    return getattr(data, "modality", "image") == "tabular"


def _check_modality(findings: Findings) -> None:
    """Refuse a modality no metric can score: never an image metric on non-images."""
    from .metrics import METRICS

    if not any(m.modality == findings.modality for _, m in METRICS.items()):
        raise InputError(f"the model takes {findings.modality} samples ({findings.modality_reason}), which "
                         f"leakaudit cannot audit yet: no metric scores {findings.modality} reconstructions")


def _is_path(value: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(value, (str, os.PathLike))


def _command(model: ModelInput, data: DataInput, settings: ScanSettings) -> tuple[str, str]:
    """The ``leakaudit scan`` command that repeats an audit of files, or "" and why there is none: a command line
    can name only files, and a model or samples passed in memory have none."""
    if _is_path(model) and _is_path(data):
        from .config import setting_args

        return shlex.join(["leakaudit", "scan", os.fspath(model), "--data", os.fspath(data),
                           *setting_args(settings)]), ""
    missing = [(what, save) for what, value, save in (
        ("the model", model, "save it (torch.onnx.export in training mode, or safetensors weights with an --arch "
                             "factory)"),
        ("the samples", data, "save them (np.savez with x = images in [0, 1] and y = labels)")) if not _is_path(value)]
    verb = "was" if [w for w, _ in missing] == ["the model"] else "were"
    return "", (f"no reproduce command: {' and '.join(w for w, _ in missing)} {verb} passed in memory through the "
                f"Python API, and a command line can name only files; to scan from the command line, "
                f"{'; '.join(s for _, s in missing)}")


def _check_folded_batchnorm(loaded: LoadedModel, settings: ScanSettings) -> None:
    """Refuse a file whose BatchNorm the exporter is recorded to have folded away, unless the user accepts it.

    Only the exporter's own record refuses: a Conv named the way the rewriter names them (metadata stripped) is
    also what dropping an all-zero bias gives, so that stays a warning (``detect``)."""
    onnx = loaded.onnx
    if onnx is None or onnx.folded_batchnorm != "recorded" or settings.allow_folded_batchnorm:
        return
    from .detect import FOLDED_BATCHNORM_REFUSAL
    from .errors import ModelError

    raise ModelError(FOLDED_BATCHNORM_REFUSAL.format(path=loaded.path, n=onnx.folded_batchnorm_count))


def _flat_note(plan: Plan) -> str:
    """The scan-level warning about flat (one-colour) samples among every audited one, "" when none."""
    from .metrics.scoring import flat_note

    if plan.batches[0].modality != "image":  # a flat token sequence or a record is not a blank image
        return ""
    return flat_note(torch.cat([b.pixels for b in plan.batches]), [n for b in plan.batches for n in b.names])


def _schema_note(plan: Any) -> str:
    """What leakaudit inferred when no --schema was given: the user must be able to check it."""
    records = plan.batches[0].records
    if records is None or not records.schema.inferred:
        return ""
    s = records.schema
    cats = "; ".join(f"{n} ({', '.join(c)})" for n, c in s.categorical) or "none"
    return (f"schema inferred (none given): label {s.label}; continuous {', '.join(s.continuous) or 'none'} "
            f"(standardised with the file's mean and std); categorical, one-hot in sorted order: {cats}")


def _references(plan: Plan, settings: ScanSettings) -> ScanReferences:
    return _scan_references(settings, plan.batches[0], torch.cat([b.pixels for b in plan.batches]))


def _scan_references(settings: ScanSettings, batch: SampleBatch, samples: torch.Tensor) -> ScanReferences:
    """Reference images, for text reference lines (``metrics.text``), for records reference records, plus the
    scan's own samples."""
    if batch.modality == "tabular":
        return _record_references(batch, settings)
    if batch.text is not None:
        from .metrics.text import scan_references as text_references

        return text_references(settings.reference_data, batch.text, samples)
    from .metrics.references import scan_references

    return scan_references(settings.reference_data, samples)


def _record_references(batch: SampleBatch, settings: ScanSettings) -> Any:
    """Every record of the scanned file (the scan's other records: each one's own copy is left out when it is
    scored) and the ``--reference-data`` records, in model space."""
    from .data.tabular import load_reference_records
    from .metrics.references import ReferenceSet

    records = batch.records
    if settings.reference_data is None:
        given = ReferenceSet(torch.zeros(0, records.schema.width), "none: the scanned file's other records", False)
    else:
        rows = load_reference_records(settings.reference_data, records.schema)
        given = ReferenceSet(records.schema.encode(rows), settings.reference_data, False)
    table = records.table if records.table is not None else batch.x
    return given.with_samples(table)


def run(prepared: Prepared, settings: ScanSettings | None = None, *, observer: Observer | None = None,
        command: str = "", started: datetime | None = None, restored: Restored = ((), ()),
        on_batch: OnBatch | None = None) -> AuditResult:
    """The audit of a prepared model and its batches (``prepared.plan``; without one, ``prepared.batch``), one
    client update each (``leakaudit.coverage``); ``settings`` default to the ones it was prepared with.
    ``restored`` (batch and sample records of a checkpoint) are not run again; ``on_batch`` receives the records
    after every batch (the CLI writes its checkpoint there).

    See ``prepare`` for an example.
    """
    from .coverage.run import Plan, Scan, run_batches

    given = settings
    settings = settings or prepared.settings or ScanSettings()
    plan = prepared.plan or Plan((prepared.batch,), len(prepared.batch))
    ruleset = prepared.ruleset if prepared.ruleset is not None else _load_rules(settings.rules)
    reason = ""
    if not command:
        # Settings other than the prepared ones are not what prepare() wrote the command for.
        command = prepared.command if given is None or given == prepared.settings else ""
        reason = prepared.command_reason or ("" if command else "no reproduce command: run() was given settings "
                                             "other than the ones prepare() loaded with; pass a command= to record")
    from .attacks.clock import max_time

    # the cap in force, written into the settings the report shows (the budget's when not given)
    settings = replace(settings, max_time=max_time(settings.budget, settings.max_time))
    clock = _clock(settings, started, len(plan.batches) - len(restored[0]))
    scan = Scan(prepared.model, prepared.findings, plan, settings, ruleset, audit_batch=audit_loaded,
                nothing_audited=_nothing_audited, source=prepared.source, references=prepared.references, clock=clock,
                command=command, started=started, notes=prepared.notes)
    result = run_batches(scan, observer=observer, restored=restored, on_batch=on_batch)
    fitted = {k: v for k, v in result.fitted_iterations().items() if k not in settings.attack_iterations}
    if fitted and result.command:  # the iterations the time gave, pinned: the command repeats on any machine
        pins = [a for name, n in fitted.items() for a in ("--attack-iterations", f"{name}={n}")]
        result = replace(result, command=f"{result.command} {shlex.join(pins)}")
    return replace(result, command_reason=reason) if reason else result


def _clock(settings: ScanSettings, started: datetime | None, batches: int) -> Clock:
    """The scan's time cap from its start, shared by its batches: one after another in-process, a worker's
    share each with --executor processes, all at once on Ray (whose cluster size is not known here)."""
    from .attacks.clock import Clock, max_time
    from .coverage.executors import cpu_count

    waves = max(1, batches)
    if settings.executor == "processes":
        waves = math.ceil(waves / (settings.workers or cpu_count()))
    elif settings.executor == "ray":
        waves = 1
    begun = started.timestamp() if started is not None else time.time()
    return Clock.start(begun, max_time(settings.budget, settings.max_time), waves)


def _nothing_audited(model: LoadedModel, findings: Findings, plan: Plan, settings: ScanSettings, ruleset: RuleSet,
                     command: str, started: datetime | None) -> AuditResult:
    """The detail sections of a scan none of whose batches could be audited: the model and the first batch, no
    attack, every rule not evaluated. ``combine`` marks it incomplete with the lost batches' reasons."""
    from datetime import timezone

    from .verdict import evaluate

    verdict = evaluate(ruleset, [], strict=settings.strict, modality=plan.batches[0].modality,
                       inapplicable=_inapplicable(plan.batches[0]))
    now = datetime.now(timezone.utc)
    return AuditResult(
        model=_model_card(model), findings=findings, data=_data_card(plan.batches[0]),
        threat=_threat(settings, plan.batches[0]), attacks=(), rules=_rule_outcomes(verdict),
        rules_overall=verdict.overall, rules_profile=ruleset.name, strict=settings.strict,
        seed=settings.seed, device=settings.device, started_at=started or now, finished_at=now, settings=settings,
        command=command, incomplete=True, incomplete_reason="no batch was audited")


def audit(model: ModelInput, data: DataInput, settings: ScanSettings | None = None, *,
          observer: Observer | None = None, command: str = "", restored: Restored = ((), ()),
          on_batch: OnBatch | None = None, **overrides: Any) -> AuditResult:
    """Audit ``model`` (a path, a ``LoadedModel`` or a ``torch.nn.Module``) on ``data`` (a path, a ``SampleBatch``
    or ``(images, labels)`` tensors, images in [0, 1]); ``docs/api.md`` is the reference.

    ``settings`` (or keyword overrides such as ``budget="quick"``) control everything else; see
    ``ScanSettings``. Raises ``LeakauditError`` subclasses for bad inputs; never prints.

    ``audit("model.onnx", "samples/")`` reads files; a model and batch already in memory work too. The
    analytic attack recovers a single sample exactly from an undefended first linear layer:

    >>> import torch
    >>> from pathlib import Path
    >>> from leakaudit.data import SampleBatch, normalization
    >>> from leakaudit.models import LoadedModel, create_model
    >>> _ = torch.manual_seed(0)
    >>> net = create_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16,))
    >>> model = LoadedModel(net, (1, 8, 8), 4, Path("mlp.safetensors"), "0" * 64, "safetensors", arch="mlp")
    >>> pixels = torch.rand(1, 1, 8, 8)  # one grey 8x8 sample in [0, 1], label 2
    >>> batch = SampleBatch(pixels, torch.tensor([2]), pixels, ("a.png",), "in memory",
    ...                     normalization("none", channels=1))
    >>> result = audit(model, batch, attacks=("analytic",))
    >>> result.overall
    'fail'
    >>> [(a.name, a.status, round(a.means["ssim"], 2)) for a in result.attacks]
    [('analytic', 'ran', 1.0)]
    >>> audit(model, batch, budget="fast")
    Traceback (most recent call last):
    ...
    leakaudit.errors.ConfigError: budget: 'fast' is not one of quick, standard, thorough; pick one of them
    """
    started = _now()
    prepared = prepare(model, data, settings, observer=observer, **overrides)
    return run(prepared, observer=observer, command=command, started=started, restored=restored,
               on_batch=on_batch)


def _client_model(loaded: LoadedModel, findings: Findings, settings: ScanSettings) -> tuple[LoadedModel, Findings]:
    """The model as the client trains it (``--client-batchnorm``: ``models.batchnorm.client_model``), and the
    findings' BatchNorm warning in the words of that mode."""
    from .models.batchnorm import client_model

    model = client_model(loaded, settings.client_batchnorm)
    if model is loaded or not findings.batchnorm:
        return model, findings
    from .detect import BATCHNORM_WARNING

    old = BATCHNORM_WARNING.format(n=len(findings.batchnorm))
    new = (f"{len(findings.batchnorm)} BatchNorm layer(s): the client trains them in eval mode "
           "(--client-batchnorm eval), normalising with their frozen running statistics; the client update and "
           "the attacks use the same")
    return model, replace(findings, warnings=tuple(new if w == old else w for w in findings.warnings))


def _batch_size(loaded: LoadedModel, settings: ScanSettings) -> tuple[ScanSettings, str]:
    """The settings with the batch size the model can train with (``models.batchnorm``), and the note that
    says leakaudit chose it ("" when the user did, or 1 works)."""
    from .models.batchnorm import resolve_batch_size

    size, note = resolve_batch_size(loaded, settings.batch_size)
    return replace(settings, batch_size=size), note


def preflight(settings: ScanSettings) -> RuleSet:
    """The cheap checks of the settings, run by scan and sweep before any model is loaded or file written (a typo
    must not cost a model load); returns the parsed rules."""
    from .attacks.device import resolve_device
    from .attacks.planner import check_budget
    from .models.batchnorm import check_client_batchnorm
    from .update.client import check_protocol

    # Each setting is checked by the stage that owns it (the same check config.coerce asks for a flag or config
    # key): here for Python callers, whose settings did not come through coerce.
    ruleset = _load_rules(settings.rules)
    if settings.no_dropout and settings.dropout:
        raise ConfigError(f"{setting_ref('no_dropout')} with {setting_ref('dropout')} {','.join(settings.dropout)}: "
                          "the model either trains with dropout or without; give one of them")
    _check_defenses(settings.defenses)
    if settings.utility_data and not Path(settings.utility_data).exists():
        raise ConfigError(f"{setting_ref('utility_data')} {settings.utility_data}: no such file or folder; point it "
                          "at held-out samples with labels (an image folder with labels.csv, .npz, .npy or "
                          ".safetensors)")
    _check_attacks(settings.attacks)
    for name in settings.attack_iterations:
        _check_attacks((name,), setting_ref("attack_iterations"))
    check_budget(settings.budget)
    if settings.protocol is not None:
        check_protocol(settings.protocol)
    check_client_batchnorm(settings.client_batchnorm)
    if settings.update_buffers not in ("yes", "no"):
        raise ConfigError(f"{setting_ref('update_buffers')} {settings.update_buffers!r}: not yes or no; give yes "
                          "(the update carries the BatchNorm running statistics) or no")
    if settings.client_batch_size is not None and not (isinstance(settings.client_batch_size, int)
                                                       and settings.client_batch_size >= 1):
        raise ConfigError(f"{setting_ref('client_batch_size')} {settings.client_batch_size!r}: must be a whole "
                          "number of at least 1; give the batch your clients train with")
    resolve_device(settings.device)  # e.g. --device cuda on a machine without a GPU
    from .coverage.executors import check_execution

    check_execution(settings)  # Ray installed and its address answering, before a model load is spent
    return ruleset


def _load_rules(rules: str) -> RuleSet:
    from .verdict import load_rules

    return load_rules(rules)


def _check_defenses(texts: tuple[str, ...]) -> None:
    from .update import parse_defense

    for text in texts:
        parse_defense(text)


def _check_attacks(names: tuple[str, ...], flag: str = setting_ref("attacks")) -> None:
    from .attacks import ATTACKS

    for name in names:
        if name not in ATTACKS:
            raise ConfigError(f"{flag} {','.join(names)}: {ATTACKS.unknown_message(name)}")


def _load_model(model: ModelInput, settings: ScanSettings, observer: Observer,
                data: DataInput | None = None) -> LoadedModel:
    from torch import nn

    from .models.interface import LoadedModel

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        from .data.tensors import sample_shape
        from .models.inmemory import wrap_module

        observer.stage("load model", f"{type(model).__name__} (in memory)")
        shape = settings.input_shape or sample_shape(data) or (
            tuple(data.x.shape[1:]) if isinstance(data, SampleBatch) else None)
        return wrap_module(model, input_shape=shape, num_classes=settings.num_classes)
    if not _is_path(model):
        raise ConfigError(f"model: got {type(model).__name__}; pass a model file's path (.onnx, or .safetensors with "
                          "arch=), a torch.nn.Module, or a LoadedModel")
    observer.stage("load model", str(model))
    from .models.load import load_model

    return load_model(Path(model), arch=settings.arch, input_shape=settings.input_shape,
                      num_classes=settings.num_classes, dropout=dict(settings.dropout) or None,
                      arch_kwargs=dict(settings.arch_args) or None)


def _load_plan(data: DataInput, loaded: LoadedModel, settings: ScanSettings, observer: Observer,
               chosen: str = "", tabular: bool = False) -> Plan:
    """Every sample given (or ``settings.samples`` of them, drawn with the seed), cut into client batches of the
    batch size; a last smaller batch takes the remainder when the model can train at its size."""
    from .coverage.run import Plan
    from .errors import DataError

    size = settings.batch_size
    if size is None:  # a Python caller's batch left to leakaudit, as prepare() does
        from .models.batchnorm import resolve_batch_size

        size, chosen = resolve_batch_size(loaded, None)
    from .data.tensors import batch_from_tensors, is_tensor_pair

    if isinstance(data, SampleBatch):
        pool = data
    elif tabular and _is_path(data):
        from .data.tabular import load_records

        observer.stage("load records", str(data))
        pool = load_records(os.fspath(data), input_shape=tuple(loaded.input_shape), num_classes=loaded.num_classes,
                            schema=settings.schema, label_column=settings.label_column)
    elif not _is_path(data):
        from .data import normalization

        channels = loaded.input_shape[0] if len(loaded.input_shape) == 3 else 1
        norm = normalization(settings.normalize, mean=settings.mean, std=settings.std, channels=channels)
        observer.stage("load samples", "tensors (in memory)" if is_tensor_pair(data) else type(data).__name__)
        pool = batch_from_tensors(data, input_shape=tuple(loaded.input_shape), num_classes=loaded.num_classes,
                                  normalization=norm)
    elif _takes_text(loaded):
        observer.stage("load samples", f"{data} (lines, tokenizer {settings.tokenizer})")
        pool = _load_text(data, loaded, settings)
    else:
        observer.stage("load samples", str(data))
        from .data import load_samples, normalization

        channels = loaded.input_shape[0] if len(loaded.input_shape) == 3 else 1
        norm = normalization(settings.normalize, mean=settings.mean, std=settings.std, channels=channels)
        pool = load_samples(Path(data), input_shape=loaded.input_shape, num_classes=loaded.num_classes,
                            normalization=norm)
    if len(pool) < size and chosen:
        why = ("the batch its ONNX file fixes (or re-export it with dynamic axes)" if "fixes batch" in chosen
               else "the smallest at which its BatchNorm layers can run in train mode")
        raise DataError(f"{pool.source}: {len(pool)} sample(s) found but the model needs a batch of "
                        f"{size}, {why}; add samples")
    if len(pool) < size:
        raise DataError(f"{pool.source}: {len(pool)} sample(s) found but {setting_ref('batch_size')} is {size}; "
                        f"add samples or lower {setting_ref('batch_size')}")
    from .coverage.split import draw, split

    chosen_pool, drawn = draw(pool, settings.samples, settings.seed)
    batches, remainder = split(chosen_pool, size, loaded, settings.samples)
    return Plan(tuple(batches), len(pool), drawn, remainder)


def _reads_local_steps(attack: str, local: LocalTraining | None) -> str:
    """What an attack does with a FedAvg update of several local steps, for its progress line."""
    if local is None or local.steps == 1:
        return ""
    from .attacks import ATTACKS

    return f"; {ATTACKS.get(attack).reads_local_steps(local)}"


def _threat(settings: ScanSettings, batch: SampleBatch) -> ThreatModel:
    from .update import parse_defense

    return ThreatModel(protocol=settings.resolved_protocol, local_steps=settings.local_steps,
                       local_lr=settings.local_lr, batch_size=len(batch), labels_known=settings.labels_known,
                       defenses=tuple(parse_defense(t) for t in settings.defenses),
                       batchnorm=settings.client_batchnorm, buffers=settings.update_buffers == "yes",
                       loss=_loss_of(batch))


def _inapplicable(batch: SampleBatch) -> dict[str, str]:
    """Metrics these samples cannot have, and why: a next-word model's lines have no class labels, so a rule on
    label recovery says nothing about them (and must not fail a --strict scan as "not evaluated")."""
    if batch.text is not None and batch.text.task == "next-token":
        return {"label_accuracy": "a next-word model has no class labels (its targets are each line's own next "
                                  "tokens, which the text rules measure)"}
    return {}


def _loss_of(batch: SampleBatch) -> str:
    """A next-word model trains on each line's next tokens; everything else on cross-entropy of its labels."""
    return "next_token" if batch.text is not None and batch.text.task == "next-token" else "cross_entropy"


def _model_card(loaded: LoadedModel) -> ModelCard:
    onnx = loaded.onnx
    return ModelCard(path=str(loaded.path), sha256=loaded.sha256, format=loaded.format,
                     input_shape=tuple(loaded.input_shape), num_classes=loaded.num_classes,
                     num_trainable=loaded.num_trainable(), arch=loaded.arch,
                     onnx_opset=onnx.opset if onnx else None, onnx_producer=onnx.producer if onnx else None,
                     looks_eval_exported=onnx.looks_eval_exported if onnx else None,
                     folded_batchnorm=onnx.folded_batchnorm if onnx else "")


def _data_card(batch: SampleBatch) -> DataCard:
    return DataCard(source=batch.source, count=len(batch), shape=tuple(batch.x.shape[1:]),
                    normalization=batch.normalization, names=tuple(batch.names),
                    labels=tuple(int(v) for v in batch.y.tolist()) if batch.y.dim() == 1 else (),
                    pixels=batch.pixels.detach().cpu(),
                    original_shapes=tuple(batch.original_shapes), modality=batch.modality,
                    texts=batch.text.texts if batch.text is not None else (), records=batch.records)


def _labels(update: ClientUpdate, loaded: LoadedModel, batch: SampleBatch,
            settings: ScanSettings) -> tuple[LabelOutcome, torch.Tensor | None]:
    """The labels attacks use: the true ones when the threat model gives them, else recovered ones."""
    if batch.text is not None and batch.text.task == "next-token":
        return LabelOutcome(known=False, strategy="not applicable: a next-word model's targets are the line's own "
                            "next tokens (the order attack recovers them with the line)", labels=(),
                            accuracy=None), None
    if settings.labels_known:
        return LabelOutcome(known=True, strategy="known", labels=tuple(int(v) for v in batch.y.tolist()),
                            accuracy=None), batch.y.clone()
    from .attacks.labels import recover_labels
    from .metrics.functional import label_accuracy

    rec = recover_labels(update.gradients, loaded.module, len(batch), loaded.num_classes)
    if rec.labels is None:
        return LabelOutcome(known=False, strategy=f"{rec.strategy} ({'; '.join(rec.notes)})", labels=(),
                            accuracy=None), None
    labels = tuple(int(v) for v in rec.labels.tolist())
    return LabelOutcome(known=False, strategy=rec.strategy, labels=labels,
                        accuracy=label_accuracy(list(labels), batch.y.tolist())), rec.labels


def _features(batch: SampleBatch) -> tuple[tuple[int, int, bool], ...]:
    """The encoded record's layout (tabular only): what the server knows of how clients encode records."""
    if batch.records is None:
        return ()
    schema = batch.records.schema
    return tuple((s, e, schema.is_categorical(k)) for k, (s, e) in enumerate(schema.spans()))


def _bounds(batch: SampleBatch, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if batch.modality != "image":  # standardised values are unbounded; a one-hot group is the attack's to shape
        return None
    norm = batch.normalization
    return norm.to_model(torch.zeros(1, *shape)), norm.to_model(torch.ones(1, *shape))


def _settings_dict(s: AttackSettings | None) -> dict[str, Any]:  # the report's JSON
    if s is None:
        return {}
    out = {"iterations": s.iterations, "restarts": s.restarts, "lr": s.lr, "tv": s.tv}
    out.update(dict(s.extra))
    return out


def _plan(findings: Findings, loaded: LoadedModel, settings: ScanSettings) -> list[PlannedAttack]:
    from .attacks import plan

    overrides: dict[str, Any] = {}
    if settings.iterations is not None:
        overrides["iterations"] = settings.iterations
    if settings.restarts is not None:
        overrides["restarts"] = settings.restarts
    for name, n in settings.attack_iterations.items():
        overrides[name] = {"iterations": n}
    return list(plan(findings, loaded, budget=settings.budget, attacks=list(settings.attacks) or None,
                     overrides=overrides, modality=findings.modality))


def _metric_names(ruleset: RuleSet) -> tuple[str, ...]:
    from .metrics import METRICS

    names = list(DISPLAY_METRICS)
    for rule in ruleset.rules:
        metric = rule.metric
        if metric and metric not in names and metric in METRICS and METRICS.get(metric).per_sample \
                and METRICS.get(metric).modality == "image":
            names.append(metric)
    return tuple(names)


def _run_one(planned: PlannedAttack, target: AttackTarget, device: torch.device, settings: ScanSettings,
             observer: Observer, truth: GroundTruth | None = None) -> Reconstruction:
    from .attacks import ATTACKS
    from .attacks.interface import run_with_truth

    attack = ATTACKS.get(planned.name)
    attack = attack() if isinstance(attack, type) else attack
    # the client's ground truth reaches only an attack that declares it needs it (the dia-informed reference)
    return run_with_truth(attack, target, _run_settings(planned), truth, device=device, seed=settings.seed,
                          observer=observer)


def _score(recon: Reconstruction, batch: SampleBatch, labels: torch.Tensor | None, metrics: tuple[str, ...],
           name: str, references: torch.Tensor | None) -> tuple[torch.Tensor, AttackScore]:
    if batch.text is not None:  # token ids against the lines (metrics.text); no image metric on text
        from .metrics.text import reference_lines, score_text

        ids = recon.x.detach().cpu().long()
        true = batch.y.tolist() if batch.text.task == "classify" else None
        return ids.float(), score_text(ids, batch.text.ids, pad_id=batch.text.pad_id, names=list(batch.names),
                                       references=reference_lines(references, batch.text.pad_id), attack=name,
                                       labels_true=true)
    from .metrics.scoring import score

    x = recon.x.detach().cpu().to(batch.x.dtype)
    # non-image samples stay in model space: there are no pixels to clamp to
    pixels = batch.normalization.to_pixels(x) if batch.modality == "image" else x
    recovered = recon.labels if recon.labels is not None else labels
    return pixels, score(pixels, batch.pixels.detach().cpu(), names=list(batch.names), labels_true=batch.y,
                         labels_recovered=recovered, metrics=metrics, attack=name, references=references,
                         batch=batch)


def _outcome(planned: PlannedAttack, recon: Reconstruction, pixels: torch.Tensor, sc: AttackScore,
             interrupted: bool) -> AttackOutcome:
    samples = tuple(sc.samples)
    rows = [s.index for s in sc.samples]
    return AttackOutcome(
        name=planned.name, status="interrupted" if interrupted else "ran",
        reason="stopped by the user; iterations below the plan" if interrupted else "",
        settings=_settings_dict(recon.settings), device=str(recon.device),
        seconds=recon.seconds, iterations_planned=_run_settings(planned).iterations,
        iterations_run=recon.iterations_run,
        attack_loss=recon.attack_loss, stopped_early=recon.stopped_early,
        notes=tuple(recon.notes) + tuple(sc.notes), samples=samples,
        means={k: v for k, v in sc.means.items() if not (isinstance(v, float) and math.isnan(v))},
        unavailable=dict(sc.unavailable), label_accuracy=sc.label_accuracy, pixels=pixels[rows] if rows else None,
        feature_spread=recon.feature_spread[rows] if rows and recon.feature_spread is not None else None)


@dataclass(frozen=True)
class _BatchRun:
    """What every attack of one batch, the main run's and the control's, runs and is scored with."""

    batch: SampleBatch
    metrics: tuple[str, ...]  # the per-sample metrics computed (``_metric_names``)
    device: torch.device
    settings: ScanSettings
    observer: Observer
    references: torch.Tensor | None  # what a reconstruction must resemble its own sample more than
    timing: _Timing  # each attack's share of the batch's time, and the cap that stops them


def _run_settings(p: PlannedAttack) -> AttackSettings:
    """The settings of a planned attack that runs: the planner gives every one of them settings."""
    assert p.settings is not None, f"{p.name} is planned to run without settings"
    return p.settings


def _attack_all(planned: Sequence[PlannedAttack], target: AttackTarget, labels: torch.Tensor | None, run: _BatchRun,
                *, ruleset: RuleSet | None = None, suppressed: frozenset[str] = frozenset(),
                truth: GroundTruth | None = None) -> tuple[list[AttackOutcome], list[AttackScore]]:
    """Run the planned attacks in order. With ``ruleset``, the attacks after the one whose leak settled the
    verdict are not run (``_settled_by``); a leak of a ``suppressed`` rule settles nothing. ``truth``: the
    client's ``GroundTruth``, for an attack that declares it needs it."""
    outcomes: list[AttackOutcome] = []
    scores: list[AttackScore] = []
    settled = ""
    for i, p in enumerate(planned):
        skipped = _not_started(p, settled, run)
        if skipped is not None:
            outcomes.append(AttackOutcome(p.name, "skipped", reason=skipped, settings=_settings_dict(p.settings)))
            continue
        run.observer.stage(f"attack {p.name}", p.reason + _reads_local_steps(p.name, target.local_training))
        outcome, sc = _attack_one(run.timing.fit(p, planned[i:]), target, labels, run, truth)
        outcomes.append(outcome)
        if sc is not None:
            scores.append(sc)
            settled = _settled_by(ruleset, scores, p.name, suppressed) if ruleset is not None else ""
    return outcomes, scores


def _not_started(p: PlannedAttack, settled: str, run: _BatchRun) -> str | None:
    """Why ``p`` is skipped without starting; None: it starts."""
    if not p.run:
        return p.reason
    if settled:
        return settled
    if run.observer.should_stop():
        return "not started: the scan was interrupted"
    if run.timing.clock.over():
        run.timing.capped.append(p.name)
        return f"not started: {run.timing.reached()}"
    return None


def _attack_one(p: PlannedAttack, target: AttackTarget, labels: torch.Tensor | None, run: _BatchRun,
                truth: GroundTruth | None) -> tuple[AttackOutcome, AttackScore | None]:
    """One attack, run and scored: its outcome, and its scores (None when it failed or did not apply)."""
    from .attacks.clock import TimedObserver

    watched = TimedObserver(run.observer, run.timing.clock.end)
    try:
        recon = _run_one(p, target, run.device, run.settings, watched, truth)
    except (KeyboardInterrupt, LeakauditError):
        raise
    except Exception as e:  # noqa: BLE001 -- one crashed attack is reported (status failed, exit 3); others run
        return AttackOutcome(p.name, "failed", reason=f"{type(e).__name__}: {' '.join(str(e).split())}",
                             settings=_settings_dict(p.settings), device=str(run.device)), None
    if recon.x.shape[0] == 0:  # the attack found at run time that it does not apply (e.g. analytic)
        return AttackOutcome(p.name, "skipped", reason=recon.notes[0] if recon.notes else "no reconstruction",
                             settings=_settings_dict(p.settings)), None
    # A final event, so a listener's display ends at what really ran (engines report every N steps only).
    planned_iterations = _run_settings(p).iterations
    done = recon.iterations_run if recon.stopped_early else planned_iterations
    run.observer.attack_progress(AttackProgress(p.name, done, planned_iterations, float(recon.attack_loss)))
    pixels, sc = _score(recon, run.batch, labels, run.metrics, p.name, run.references)
    interrupted = bool(recon.stopped_early and run.observer.should_stop())
    outcome = _outcome(p, recon, pixels, sc, interrupted)
    text = run.batch.text
    if text is not None:  # the report's sentence view: recovered next to true, token by token
        from .metrics.text import sentence_view

        outcome = replace(outcome, sentences=tuple(
            sentence_view(recon.x[s.index], text.ids[s.original_index], text) for s in sc.samples))
    if watched.timed_out and not interrupted:
        run.timing.capped.append(p.name)
        outcome = replace(outcome, reason=f"stopped at {recon.iterations_run} of {planned_iterations} "
                                          f"iterations: {run.timing.reached()}")
    return outcome, sc


@dataclass
class _Timing:
    """A batch's time: the scan's clock, the end of this batch's share, the attacks whose iterations are pinned
    (never fitted), the optimisation runs still to come after the current stage's (the control's), and the
    attacks the cap stopped or kept from starting."""

    clock: Clock
    batch_end: float  # epoch seconds
    pinned: set[str] = field(default_factory=set)
    later: int = 0
    capped: list[str] = field(default_factory=list)

    @classmethod
    def unlimited(cls) -> _Timing:
        from .attacks.clock import Clock

        return cls(Clock(math.inf, math.inf, math.inf), math.inf)

    def fit(self, p: PlannedAttack, rest: Sequence[PlannedAttack]) -> PlannedAttack:
        """``p`` with its time share (``settings.extra["seconds"]``) when its iterations are fitted to time: an
        Adam gradient-matching attack whose iterations the user did not pin."""
        if p.name in self.pinned or _run_settings(p).iterations <= 1 or not math.isfinite(self.batch_end) \
                or not _fitted_by_time(p.name):
            return p
        runs = sum(1 for q in rest if q.run and q.settings is not None and q.settings.iterations > 1) + self.later
        seconds = round(self.clock.share(self.batch_end, runs), 1)
        settings = _run_settings(p)
        return replace(p, settings=replace(settings, extra={**settings.extra, "seconds": seconds}))

    def reached(self) -> str:
        return f"the scan's time cap ({self.clock.cap:g} s; --max-time) was reached"


def _fitted_by_time(name: str) -> bool:
    from .attacks import ATTACKS
    from .attacks.matching import GradientMatchingAttack

    attack = ATTACKS.get(name)
    instance = attack() if isinstance(attack, type) else attack
    return isinstance(instance, GradientMatchingAttack) and instance.optimizer == "adam"


def _timing(clock: Clock, settings: ScanSettings, planned: list[PlannedAttack], findings: Findings) -> _Timing:
    """The batch's ``_Timing``, from now: the control will run the planned optimisation attacks again when
    defenses are simulated, and ``dia-informed`` when the model has dropout."""
    opt = sum(1 for p in planned if p.run and p.settings is not None and p.settings.iterations > 1)
    later = (opt if settings.defenses else 0) + (1 if findings.has_dropout else 0)
    pinned = set(settings.attack_iterations) if settings.iterations is None else {p.name for p in planned}
    return _Timing(clock, clock.batch_end(time.time()), pinned, later)


def _settled_by(ruleset: RuleSet, scores: list[AttackScore], attack: str,
                suppressed: frozenset[str] = frozenset()) -> str:
    """Why the remaining attacks need not run ("" while they may still matter). Rules take the worst value
    over attacks, so once a fail-severity rule fires no further attack can turn the verdict into a pass;
    the expensive optimisation attacks after a cheap exact one then only cost time."""
    from .verdict import evaluate

    fired = [r.rule.id for r in evaluate(ruleset, scores, strict=False).results
             if r.status == "fail" and r.rule.id not in suppressed]
    if not fired:
        return ""
    return (f"verdict already settled by {attack} ({', '.join(fired)} failed); "
            "run every planned attack with --all-attacks")


def _rule_outcomes(verdict: Verdict) -> tuple[RuleOutcome, ...]:
    out = []
    for r in verdict.results:
        rule = r.rule
        out.append(RuleOutcome(
            id=rule.id, metric=rule.metric, comparison=rule.comparison, threshold=float(rule.threshold),
            severity=rule.severity, scope=rule.scope, status=r.status,
            observed=None if r.observed is None else float(r.observed), attack=r.attack, sample=r.sample,
            reason=r.reason or "", description=rule.description, rationale=rule.rationale, reference=rule.reference,
            max_p=rule.max_p))
    return tuple(out)


def audit_loaded(model: LoadedModel, batch: SampleBatch, findings: Findings, settings: ScanSettings | None = None,
                 observer: Observer | None = None, *, command: str = "", started: datetime | None = None,
                 ruleset: RuleSet | None = None, references: ScanReferences | None = None,
                 clock: Clock | None = None) -> AuditResult:
    """The audit of an already loaded model and batch (what ``leakaudit sweep`` runs once per value).
    ``references``: the scan's ``ScanReferences``; None builds them from the settings and this batch. ``clock``:
    the scan's time cap (``attacks.clock.Clock``); None: the settings' cap from now, for this batch alone."""
    settings = settings or ScanSettings()
    clock = clock if clock is not None else _clock(settings, None, 1)
    if references is None:
        references = _scan_references(settings, batch, batch.pixels)
    observer = observer or NullObserver()
    started = started or _now()
    ruleset = ruleset if ruleset is not None else _load_rules(settings.rules)
    from .attacks.device import resolve_device
    from .attacks.interface import AttackTarget, GroundTruth
    from .update import client_update

    device = resolve_device(settings.device)
    from .models.batchnorm import client_model

    # The attacks copy this model too, so they compute the update with the client's BatchNorm mode.
    model = client_model(model, settings.client_batchnorm)
    model = _frozen(model, settings.freeze)
    threat = _threat(settings, batch)
    local = threat.local_training()
    observer.stage("client update", f"{threat.protocol}{f' ({local})' if local else ''}, batch {len(batch)}"
                   + (f", defenses {', '.join(settings.defenses)}" if settings.defenses else ""))
    update = client_update(model, batch, threat, findings, seed=settings.seed)
    # The same client step without the defenses: what the defenses cost, and what the control attacks.
    clean = client_update(model, batch, replace(threat, defenses=()), findings, seed=settings.seed) \
        if threat.defenses else update
    cost = _defense_cost(model, batch, clean, update, settings) if threat.defenses else None
    conditioning = _conditioning(model, batch, threat, clean, findings, settings, observer)
    buffers, recovered = _buffer_leak(model, clean, observer) if threat.buffers else (None, ())
    label_outcome, labels = _labels(update, model, batch, settings)
    planned = _plan(findings, model, settings)
    target = AttackTarget(module=model.module, gradients=update.gradients, input_shape=tuple(model.input_shape),
                          num_classes=model.num_classes, labels=labels, num_samples=len(batch), findings=findings,
                          bounds=_bounds(batch, tuple(model.input_shape)), loss=threat.loss,
                          local_training=local, pad_id=batch.text.pad_id if batch.text is not None else None,
                          text_task=batch.text.task if batch.text is not None else None, features=_features(batch),
                          batch_statistics=recovered, ill_conditioned=conditioning.ill)
    metrics = _metric_names(ruleset)
    # The automatic plan stops at the first settled leak unless asked not to; attacks the user named all run.
    settle = None if settings.all_attacks or settings.attacks else ruleset
    card = _model_card(model)
    suppressions = _suppressions(settings, card)
    timing = _timing(clock, settings, planned, findings)
    run = _BatchRun(batch, metrics, device, settings, observer, references.pixels, timing)
    outcomes, scores = _attack_all(planned, target, labels, run, ruleset=settle, suppressed=_active(suppressions),
                                   truth=GroundTruth(update.true_dropout_masks))
    main_capped = tuple(timing.capped)

    from .verdict import evaluate

    verdict = evaluate(ruleset, scores, strict=settings.strict, modality=batch.modality,
                       inapplicable=_inapplicable(batch))
    # Suppressed findings (leakaudit.suppress) settle nothing: the control runs as if they had not fired
    verdict = _suppressed(verdict, suppressions, strict=settings.strict)
    control = _control(ControlRequest(verdict, ruleset, planned, outcomes, scores, target, update, clean, model,
                                      findings), run)
    control = _time_limited(control, timing, main_capped)
    if conditioning.ill and control.counts is False:  # why the control could not reconstruct, and what helps
        control = replace(control, evidence=f"{control.evidence}; {conditioning.summary()}")
    observer.stage("verdict", f"rules {settings.rules}")
    interrupted = observer.should_stop()
    return AuditResult(
        model=card, findings=findings, data=_data_card(batch), threat=update.threat,
        attacks=tuple(outcomes), rules=_rule_outcomes(verdict), rules_overall=verdict.overall,
        rules_profile=ruleset.name, strict=settings.strict, seed=settings.seed,
        device=str(device), started_at=started, finished_at=_now(), label_recovery=label_outcome, settings=settings,
        command=command, incomplete=interrupted, control=control, defense_cost=cost, references=references.summary(),
        conditioning=conditioning, suppressions=_suppression_records(verdict, suppressions),
        batchnorm_statistics=buffers,
        incomplete_reason="interrupted (Ctrl-C or SIGTERM); attacks after the stop were not run" if interrupted else "")


def _frozen(model: LoadedModel, prefixes: Sequence[str]) -> LoadedModel:
    """A copy of ``model`` whose parameters named by ``prefixes`` (--freeze) do not train: the client's update
    then carries no gradient for them (a frozen token embedding leaks no token set)."""
    if not prefixes:
        return model
    import copy

    names = [n for n, p in model.module.named_parameters() if p.requires_grad]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise ConfigError(f"{setting_ref('freeze')} {unknown[0]}: no trainable parameter's name starts with it; the "
                          f"model's are {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}")
    frozen = copy.copy(model)
    frozen.module = copy.deepcopy(model.module)
    for name, p in frozen.module.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)
    return frozen


def _suppressions(settings: ScanSettings, card: ModelCard) -> tuple[Entry, ...]:
    """The [[ignore]] entries of the settings' ignore file that apply to this model (``leakaudit.suppress``)."""
    from .suppress import entries_for

    return entries_for(settings.ignore_file, card.path, card.sha256)


def _active(entries: Sequence[Entry]) -> frozenset[str]:
    """The rule ids an unexpired entry suppresses."""
    from .suppress import today

    on = today()
    return frozenset(e.rule for e in entries if not e.expired(on))


def _suppressed(verdict: Verdict, entries: Sequence[Entry], *, strict: bool) -> Verdict:
    """The verdict with the suppressions ``verdict.outcome`` decides: a suppressed leak does not fail it, so the
    control runs and a pass must still be earned by the control's own (never suppressed) rules."""
    if not entries:
        return verdict
    from .verdict.outcome import rules_fail, suppressed_statuses

    statuses = suppressed_statuses([(r.rule.id, r.status, r.rule.severity) for r in verdict.results],
                                   _active(entries))
    results = tuple(replace(r, status=cast("Status", s)) for r, s in zip(verdict.results, statuses, strict=True))
    failing = rules_fail(((r.rule.id, r.status, r.rule.severity) for r in results), strict=strict)
    return replace(verdict, results=results, overall="fail" if failing else "pass")


def _suppression_records(verdict: Verdict, entries: Sequence[Entry]) -> tuple[SuppressionOutcome, ...]:
    if not entries:
        return ()
    from .suppress import apply_rules

    return apply_rules(_rule_outcomes(verdict), entries)[1]


# ---------------------------------------------------------------------------------------------------
# The positive control
# ---------------------------------------------------------------------------------------------------


def _time_limited(control: ControlOutcome, timing: _Timing, main_capped: tuple[str, ...]) -> ControlOutcome:
    """The control, limited when the cap stopped a defended attack (its reconstruction then does not show what
    the defended attacks would have done in their planned time) or kept the control itself from reconstructing."""
    if control.status != "ran" or not timing.capped or (control.reconstructed and not main_capped):
        return control
    which = ", ".join(dict.fromkeys(main_capped or timing.capped))
    text = (f"{timing.reached()}: {which} stopped or not started before their planned iterations; raise --max-time, "
            "or run on a GPU (--device cuda)")
    return replace(control, limited=text, evidence=f"{control.evidence}; {text}" if control.evidence else text)


def _pinned_to(planned: PlannedAttack, outcomes: Sequence[AttackOutcome], timing: _Timing) -> PlannedAttack:
    """A control attack with the iterations its main run was fitted to: the control must not out-spend the
    attack on the defended update, or its reconstruction proves less than the pass claims."""
    main = next((a for a in outcomes if a.name == planned.name and a.ran), None)
    if main is None or main.stopped_early or not main.iterations_run or not main.iterations_planned \
            or main.iterations_run >= main.iterations_planned:
        return planned
    timing.pinned.add(planned.name)
    return replace(planned, settings=replace(_run_settings(planned), iterations=main.iterations_run))


@dataclass(frozen=True)
class ControlRequest:
    """What the positive control of one batch starts from: the main run under the rules (its verdict, plan,
    outcomes and scores, and the target it attacked) and the client's step with and without the defenses."""

    verdict: Verdict  # the main run's, suppressions applied
    ruleset: RuleSet
    planned: Sequence[PlannedAttack]
    outcomes: Sequence[AttackOutcome]
    scores: Sequence[AttackScore]
    target: AttackTarget
    update: ClientUpdate  # what the main run attacked, defenses applied
    clean: ClientUpdate  # the same client step without the defenses (``update`` itself when none is simulated)
    model: LoadedModel
    findings: Findings


def _control(request: ControlRequest, run: _BatchRun) -> ControlOutcome:
    """The attacks' power on this model without the defenses under evaluation.

    Without simulated defenses the main run's attacks are the control for everything but the dropout masks,
    so only ``dia-informed`` (the client's true masks) is added. With defenses, the planned attacks run again
    on the clean update of the same samples (same seed: same dropout masks), at the same budget. Attacks run
    cheapest first and stop once the control reconstructs: one reconstruction is all a pass needs.
    """
    removed = tuple(str(d) for d in request.update.threat.defenses)
    not_run = _control_not_run(request.verdict, run.observer, removed)
    if not_run is not None:
        return not_run
    # Judged by what "recognised" means (the profile's per-sample fail rules, else the default profile's), so
    # no profile -- rate rules only, warn rules only -- earns a pass without a control that reconstructed.
    from .verdict.rules import recognition_rules

    criterion = replace(request.ruleset, rules=recognition_rules(request.ruleset, run.batch.modality))
    run.timing.later = 0
    wanted = _control_attacks(request, removed, run)
    if removed:
        clean_target = _clean_target(request.model, run.batch, request.clean, request.target, run.settings)
        base: list[AttackScore] = []
        how = f"the planned attacks on the update without {', '.join(removed)}"
    else:
        clean_target, base = request.target, list(request.scores)
        how = "the main run's attacks (no defense was simulated)"
    if any(p.name == "dia-informed" for p in wanted):
        how += "; dia-informed with the client's true dropout masks"
    run.observer.stage("positive control", how)
    from .attacks.interface import GroundTruth

    # without defenses clean is the update itself: its masks are the ones the main run had
    own, _, result = _control_runs(wanted, clean_target, run, criterion, base,
                                   GroundTruth(request.clean.true_dropout_masks))
    shared = () if removed else tuple(a.name for a in request.outcomes if a.ran)
    rules = _rule_outcomes(result)
    reconstructed = any(r.status == "fail" for r in rules)
    status = "interrupted" if run.observer.should_stop() and not reconstructed else "ran"
    return ControlOutcome(status, how, reconstructed, removed, shared, tuple(own), rules,
                          _evidence(rules, reconstructed))


def _control_not_run(verdict: Verdict, observer: Observer, removed: tuple[str, ...]) -> ControlOutcome | None:
    """The control's outcome when it does not run (a leak, or the scan interrupted); None: it runs."""
    if verdict.overall == "fail":  # a leak, or under --strict a fail-severity rule that could not be evaluated
        why = ("a leak was found" if any(r.status == "fail" for r in verdict.results) else
               "--strict failed the scan on a fail-severity rule that could not be evaluated")
        return ControlOutcome("not_needed", f"{why}: the verdict does not rest on the control", None, removed)
    if observer.should_stop():
        return ControlOutcome("interrupted", "the scan was interrupted before the control ran", None, removed)
    return None


def _control_attacks(request: ControlRequest, removed: tuple[str, ...], run: _BatchRun) -> list[PlannedAttack]:
    """The attacks the control runs: with defenses the main run's (at most the iterations they ran there), and
    ``dia-informed`` when the model has dropout."""
    wanted = [_pinned_to(p, request.outcomes, run.timing) for p in request.planned if p.run] if removed else []
    have = {p.name for p in request.planned if p.run}
    if request.findings.has_dropout and ("dia-informed" not in have or removed):
        wanted = [p for p in wanted if p.name != "dia-informed"] + _informed(request.findings, request.model,
                                                                            run.settings)
    return wanted


def _conditioning(model: LoadedModel, batch: SampleBatch, threat: ThreatModel, clean: ClientUpdate,
                  findings: Findings, settings: ScanSettings, observer: Observer) -> Conditioning:
    """The update at the samples (``clean``) against the update at the samples moved by 1e-4 of the pixel range:
    whether gradient matching can work on this batch at all (``update.conditioning``)."""
    from .update.conditioning import conditioning

    from .modality import words

    moved = words(batch.modality).move(1e-4)
    observer.stage("conditioning", f"the update at the samples vs at the samples moved by {moved}" if moved else
                   "not measured: a token id cannot be moved by a small amount")
    return conditioning(model, batch, threat, clean.gradients, findings, seed=settings.seed,
                        bounds=_bounds(batch, tuple(model.input_shape)))


def _buffer_leak(model: LoadedModel, clean: ClientUpdate,
                 observer: Observer) -> tuple[BufferLeak | None, tuple[RecoveredLayer, ...]]:
    """What the BatchNorm running statistics in the update reveal (``--update-buffers yes``): the server's closed
    form on the buffers sent, against the global model's (the model as loaded), scored against the truth; and the
    statistics it recovered, which the attacks are given (what a server has, never the truth)."""
    from .update.buffers import recovered_statistics

    observer.stage("BatchNorm statistics", "the server's closed form on the running statistics in the update")
    return recovered_statistics(model.module, {n: b.detach().clone() for n, b in model.module.named_buffers()},
                                clean, tuple(model.input_shape))


def _defense_cost(model: LoadedModel, batch: SampleBatch, clean: ClientUpdate, defended: ClientUpdate,
                  settings: ScanSettings) -> DefenseCost:
    from .update.cost import defense_cost

    heldout = None
    if settings.utility_data:
        from .data import load_samples, normalization

        channels = model.input_shape[0] if len(model.input_shape) == 3 else 1
        norm = normalization(settings.normalize, mean=settings.mean, std=settings.std, channels=channels)
        heldout = load_samples(settings.utility_data, input_shape=model.input_shape, num_classes=model.num_classes,
                               normalization=norm)
    return defense_cost(model, batch, clean.gradients, defended.gradients, defended.threat, seed=settings.seed,
                        heldout=heldout)


def _informed(findings: Findings, model: LoadedModel, settings: ScanSettings) -> list[PlannedAttack]:
    """dia-informed, planned at the scan's budget: the dropout masks as the attacker would most like them."""
    from .attacks import plan

    overrides = {k: v for k, v in (("iterations", settings.iterations), ("restarts", settings.restarts)) if v}
    return [p for p in plan(findings, model, budget=settings.budget, attacks=["dia-informed"], overrides=overrides)
            if p.run]


def _clean_target(model: LoadedModel, batch: SampleBatch, clean: ClientUpdate, target: AttackTarget,
                  settings: ScanSettings) -> AttackTarget:
    """The attack target of the same client step without defenses (``clean``): what the control attacks."""
    _, labels = _labels(clean, model, batch, settings)
    return replace(target, gradients=clean.gradients, labels=labels)


def _control_runs(wanted: list[PlannedAttack], target: AttackTarget, run: _BatchRun, ruleset: RuleSet,
                  scores: list[AttackScore], truth: GroundTruth | None = None,
                  ) -> tuple[list[AttackOutcome], list[AttackScore], Verdict]:
    from .verdict import evaluate

    own: list[AttackOutcome] = []
    result = evaluate(ruleset, scores, strict=False)
    for i, p in enumerate(wanted):
        if result.overall == "fail":  # reconstructed: the remaining control attacks cannot change that
            own += [AttackOutcome(q.name, "skipped", reason="not needed: the control already reconstructed",
                                  settings=_settings_dict(q.settings)) for q in wanted[i:]]
            break
        # the control attacks after this one share the time left too
        run.timing.later = sum(1 for q in wanted[i + 1:] if q.run and _run_settings(q).iterations > 1)
        ran, new = _attack_all([p], target, target.labels, run, truth=truth)
        own += ran
        scores = scores + new
        result = evaluate(ruleset, scores, strict=False)
    return own, scores, result


def _evidence(rules: tuple[RuleOutcome, ...], reconstructed: bool) -> str:
    """The control's standing against the rules that define recognised, e.g. "control: ssim_skill 0.02 (ig), needs
    >= 0.1 and match_p <= 0.02"."""
    fail = [r for r in rules if r.severity == "fail"]
    shown = [r for r in fail if r.status == ("fail" if reconstructed else "pass")] or fail
    parts = [f"{r.metric} {_fmt(r.observed)}" + (f" ({r.attack})" if r.attack else "") + f", needs {r.comparison} "
             f"{r.threshold:g}" + (f" and match_p <= {r.max_p:g}" if r.max_p is not None else "")
             for r in shown if r.observed is not None]
    if not parts and any(r.max_p is not None and r.status == "pass" for r in shown):
        return ("control: no reconstruction was attributable to its own sample (" + "; ".join(
            f"{r.metric} {r.comparison} {r.threshold:g} and match_p <= {r.max_p:g}" for r in shown
            if r.max_p is not None) + " needed)")
    if not parts:
        return "control: no attack produced a reconstruction"
    return "control: " + "; ".join(parts[:2])


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


class _CallableModule(types.ModuleType):
    """This module, callable as its ``audit`` function: ``import leakaudit; leakaudit.audit(model, data)``. The
    package's ``audit`` attribute is this module for everything that imports it by that name."""

    def __call__(self, model: ModelInput, data: DataInput, settings: ScanSettings | None = None,
                 **kwargs: Any) -> AuditResult:
        return audit(model, data, settings, **kwargs)  # looked up at call time: a patched audit is honoured


sys.modules[__name__].__class__ = _CallableModule
