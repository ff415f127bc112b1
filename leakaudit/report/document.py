"""AuditResult -> the report document (a JSON-ready dict, schema ``reports/report.schema.json``).

Every output format (JSON, HTML, JUnit) is rendered from this document alone, so ``leakaudit render
report.json`` reproduces the HTML of the scan exactly. What goes in:

- reconstructions: always, as small PNG data URIs (they are the evidence of what an attacker obtains);
- originals: only with ``embed_data`` (the user's private samples; without it the report names them only);
- non-finite numbers (PSNR of an exact reconstruction is +inf) as the strings "inf", "-inf", "nan",
  because JSON has no such numbers.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any, Sequence

from .. import __version__
from ..modality import words
from ..result import AttackOutcome, AuditResult, ControlOutcome, CoverageOutcome, SampleCoverage
from ..verdict.outcome import counts
from .budget import describe as describe_budget
from .images import png_data_uri
from .recommendations import ill_conditioned, recommend

if TYPE_CHECKING:
    from ..update.cost import DefenseCost  # a type only: rendering a report never imports torch

SCHEMA_VERSION = "1.9"
LIBRARIES = ("torch", "onnx", "onnx2torch", "onnxruntime", "numpy", "safetensors", "lpips", "torchvision")


def number(value: float | int | None) -> float | int | str | None:
    """A JSON-safe number: non-finite floats become "inf" / "-inf" / "nan"."""
    if value is None or isinstance(value, (bool, int)):
        return value
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _metrics(values: dict[str, float]) -> dict[str, Any]:
    return {k: number(v) for k, v in values.items()}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _jsonable(value: Any) -> Any:
    """Settings dicts may hold tuples, numpy or torch scalars: make them plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return number(value)
    if hasattr(value, "item"):
        try:
            return number(value.item())
        except (ValueError, RuntimeError):
            pass
    return str(value)


def explain(metrics: dict[str, float], references: int | None, transform: str = "", modality: str = "image") -> str:
    """The recognition test of one sample in words a compliance reader can check ("" when it did not run)."""
    p = metrics.get("match_p")
    if p is None or references is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    rank = round(p * (references + 1)) - 1  # references at least as similar as its own original
    own = f"its own {words(modality).original}"
    place = (f"matched to {own} among {references + 1} (chance 1 in {references + 1})" if rank == 0
             else f"not matched to {own}: {rank} of {references} references are at least as similar "
                  f"(p {p:.3g})")
    parts = [place]
    word_score = metrics.get("text_skill")
    if word_score is not None and not math.isnan(word_score):
        parts.append(f"word score {word_score:.2f}, where the references' most frequent words score 0 and the exact "
                     "line 1")
    skill, gain = metrics.get("ssim_skill"), metrics.get("psnr_gain")
    if skill is not None and not math.isnan(skill):
        parts.append(f"structure score {skill:.2f}, where a blank or heavily blurred copy scores 0 and an exact "
                     "copy 1")
    if gain is not None and not math.isnan(gain):
        parts.append("pixels exact (PSNR gain inf)" if math.isinf(gain) else
                     f"PSNR {gain:+.1f} dB over a blank or heavily blurred copy")
    if transform and transform != "as is":
        parts.append(f"registered {transform}")
    return "; ".join(parts)


def _fires(rules: Any, metrics: dict[str, float], excluded: Any, references: int | None) -> list[str]:
    from ..verdict.rules import fires_on

    return [r.id for r in rules if fires_on(r, metrics, excluded, references)]


def _sentence(view: dict[str, Any], embed_data: bool) -> dict[str, Any]:
    """A text sample's view: the recovered line always (it is the evidence, like a reconstruction image), the
    true line only with --embed-data (the user's private sample, like an original image)."""
    out = dict(view)
    if not embed_data:
        out["true"] = None
        out["true_tokens"] = None
    return out


def _attack(outcome: AttackOutcome, criterion: Any = (), embed_data: bool = False, records: Any = None,
            truth: Any = None, modality: str = "image") -> dict[str, Any]:
    samples = []
    for i, s in enumerate(outcome.samples):
        image = None
        sentence = _sentence(outcome.sentences[i], embed_data) if i < len(outcome.sentences) else None
        if sentence is None and records is None and outcome.pixels is not None and i < outcome.pixels.shape[0]:
            image = png_data_uri(outcome.pixels[i])
        fired = _fires(criterion, s.metrics, s.excluded, s.references)
        samples.append({
            "index": s.index,
            "original_index": s.original_index,
            "name": s.name,
            "metrics": _metrics(s.metrics),
            "label_true": s.label_true,
            "label_recovered": s.label_recovered,
            "flat": s.flat,
            "excluded": dict(s.excluded),
            "reconstruction": image,
            "sentence": sentence,
            "references": s.references,
            "transform": s.transform,
            "recognised": bool(fired),
            "recognised_by": fired,
            "explanation": explain(s.metrics, s.references, s.transform, modality),
        })
        if records is not None:  # a record is shown column by column, never as an image
            samples[-1]["record"] = _record(records, outcome, i, s.original_index, truth, embed_data)
    return {
        "name": outcome.name,
        "status": outcome.status,
        "reason": outcome.reason,
        "settings": _jsonable(outcome.settings),
        "device": outcome.device,
        "seconds": number(outcome.seconds),
        "iterations_planned": outcome.iterations_planned,
        "iterations_run": outcome.iterations_run,
        "attack_loss": number(outcome.attack_loss),
        "stopped_early": outcome.stopped_early,
        "notes": list(outcome.notes),
        "means": _metrics(outcome.means),
        "unavailable": dict(outcome.unavailable),
        "label_accuracy": number(outcome.label_accuracy),
        "samples": samples,
    }


def _record(records: Any, outcome: AttackOutcome, row: int, original: int, truth: Any,
            embed_data: bool = False) -> list[dict[str, Any]] | None:
    """Per column of one reconstructed record: the recovered value, whether it was recovered, the attack's
    disagreement over restarts where it measures one (TabLeak), and the true value only with --embed-data (the
    user's private record, like an original image; the recovered one is the evidence and is always there)."""
    if outcome.pixels is None or row >= outcome.pixels.shape[0] or original >= len(records.rows):
        return None
    schema = records.schema
    recovered = schema.decode(outcome.pixels[row:row + 1])[0]
    hits = schema.hits(outcome.pixels[row].reshape(-1).float(), truth[original].reshape(-1).float()).tolist()
    spread = outcome.feature_spread[row].tolist() if outcome.feature_spread is not None else None
    return [{"column": name, "kind": "categorical" if schema.is_categorical(k) else "continuous",
             "true": _cell(records.rows[original][k]) if embed_data else None, "recovered": _cell(recovered[k]),
             "match": bool(hits[k]),
             "spread": number(spread[k]) if spread is not None else None}
            for k, name in enumerate(schema.columns)]


def _cell(value: Any) -> Any:
    return number(float(value)) if isinstance(value, (int, float)) else str(value)


def _records(result: AuditResult) -> dict[str, Any] | None:
    """Tabular scans: the schema (as given or inferred) and which columns leak most -- per column the fraction
    of audited records whose best attack recovered it (every batch, with coverage; else the batch shown)."""
    records = result.data.records
    if records is None:
        return None
    from ..data.tabular import TOLERANCE

    schema = records.schema
    labels: list[bool] = []  # the label column (a diagnosis): recovered from the update like a feature
    if result.coverage is not None and result.coverage.samples:
        rows = [s.recovered for s in result.coverage.samples if s.recovered]
        labels = [s.label_recovered == s.label for s in result.coverage.samples
                  if s.recovered and s.label_recovered is not None]
        scope = "every audited record (the best attack on each)"
    else:
        best: dict[int, tuple[float, list[bool], list[bool]]] = {}
        truth = result.data.pixels
        for a in result.attacks:
            if not a.ran or a.pixels is None or truth is None:
                continue
            for i, s in enumerate(a.samples):
                hits = schema.hits(a.pixels[i].reshape(-1).float(), truth[s.original_index].reshape(-1).float())
                value = s.metrics.get("record_match", 0.0)
                if s.original_index not in best or value > best[s.original_index][0]:
                    label = [s.label_recovered == s.label_true] if s.label_recovered is not None else []
                    best[s.original_index] = (value, [bool(h) for h in hits.tolist()], label)
        rows = [tuple(int(h) for h in v[1]) for v in best.values()]
        labels = [x for v in best.values() for x in v[2]]
        scope = "the records of the batch shown (the best attack on each)"
    columns = [{"column": name, "kind": "categorical" if schema.is_categorical(k) else "continuous",
                "recovered": sum(r[k] for r in rows), "audited": len(rows),
                "fraction": number(sum(r[k] for r in rows) / len(rows)) if rows else None}
               for k, name in enumerate(schema.columns)]
    if labels:
        columns.append({"column": schema.label, "kind": "label", "recovered": sum(labels), "audited": len(labels),
                        "fraction": number(sum(labels) / len(labels))})
    columns.sort(key=lambda c: -(c["fraction"] or 0.0))
    return {"schema": schema.to_dict(), "tolerance": TOLERANCE, "columns": columns, "columns_over": scope}


def _findings(result: AuditResult) -> dict[str, Any]:
    f = result.findings
    return {
        "layers": [{"name": n, "type": t, "trainable": int(k)} for n, t, k in f.layers],
        "dropout": [dataclasses.asdict(d) for d in f.dropout],
        "bottlenecks": [{**dataclasses.asdict(b), "params_after": list(b.params_after),
                         "params_before": list(b.params_before)} for b in f.bottlenecks],
        "batchnorm": list(f.batchnorm),
        "unrecognized_stochastic": list(f.unrecognized_stochastic),
        "warnings": list(f.warnings),
        "modality": f.modality,
        "modality_reason": f.modality_reason,
    }


def _data(result: AuditResult, embed_data: bool) -> dict[str, Any]:
    d = result.data
    pixels = d.pixels if embed_data else None
    samples = []
    for i, name in enumerate(d.names):
        samples.append({
            "index": i,
            "name": name,
            "label": d.labels[i] if i < len(d.labels) else None,
            "original": png_data_uri(pixels[i]) if pixels is not None and d.modality == "image" else None,
            "text": d.texts[i] if embed_data and i < len(d.texts) else None,
            # what the file held before it was fitted to the model's input (images are resized by design)
            "original_shape": list(d.original_shapes[i]) if i < len(d.original_shapes) else None,
        })
    norm = d.normalization
    return {
        "source": d.source,
        "count": d.count,
        "shape": list(d.shape),
        "normalization": {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std)},
        "originals_embedded": pixels is not None,
        "samples": samples,
        "modality": d.modality,
    }


def _rules(result: AuditResult) -> dict[str, Any]:
    return {
        "profile": result.rules_profile,
        "strict": result.strict,
        "results": [{**dataclasses.asdict(r), "threshold": number(r.threshold), "observed": number(r.observed)}
                    for r in result.rules],
    }


def _verdict(result: AuditResult) -> dict[str, Any]:
    """The outcome (leakaudit.verdict.outcome): ``exit_code`` is the process's, after --exit-zero."""
    outcome = result.outcome
    return {"overall": outcome.overall, "exit_code": outcome.exit_code, "summary": outcome.summary,
            "counts": counts([(r.id, r.status) for r in result.rules]), "rules_overall": outcome.rules_overall,
            "exit_zero": outcome.exit_zero, "crashed_attacks": list(outcome.crashed),
            "control_reconstructed": result.control.counts if result.control else None}


INCONCLUSIVE_ADVICE = ("raise the attacks' power: --budget thorough (or more --iterations / --restarts), on a GPU "
                      "with --device cuda; or add samples the model classifies with a Linear layer the analytic "
                      "attack can invert")


def _control(control: ControlOutcome | None) -> dict[str, Any] | None:
    """The positive control: which attacks ran as control, their best scores, whether it reconstructed."""
    if control is None:
        return None
    return {
        "status": control.status, "reason": control.reason, "reconstructed": control.reconstructed,
        "defenses_removed": list(control.defenses_removed), "shared_attacks": list(control.shared),
        "attacks": [{k: v for k, v in _attack(a).items() if k != "samples"} for a in control.attacks],
        "rules": [{"id": r.id, "metric": r.metric, "comparison": r.comparison, "threshold": number(r.threshold),
                   "severity": r.severity, "status": r.status, "observed": number(r.observed), "attack": r.attack,
                   "sample": r.sample} for r in control.rules],
        "evidence": control.evidence,
        "limited": control.limited,
    }


def _defense_cost(cost: DefenseCost | None) -> dict[str, Any] | None:
    """What the simulated defenses cost the update's usefulness (``leakaudit.update.cost``)."""
    if cost is None:
        return None
    return {"cosine": number(cost.cosine), "relative_error": number(cost.relative_error), "step": number(cost.step),
            "loss_before": number(cost.loss_before), "loss_after_clean": number(cost.loss_after_clean),
            "loss_after_defended": number(cost.loss_after_defended), "kept": number(cost.kept),
            "reason": cost.reason, "heldout": _heldout(cost.heldout), "summary": cost.summary()}


def _heldout(h: Any) -> dict[str, Any] | None:
    """The defense cost on held-out samples (schema 1.8, --utility-data); None without them."""
    if h is None:
        return None
    return {"source": h.source, "samples": h.samples, "loss_before": number(h.loss_before),
            "loss_after_clean": number(h.loss_after_clean), "loss_after_defended": number(h.loss_after_defended),
            "accuracy_before": number(h.accuracy_before), "accuracy_after_clean": number(h.accuracy_after_clean),
            "accuracy_after_defended": number(h.accuracy_after_defended)}


def _conditioning_dict(c: dict[str, Any] | None) -> dict[str, Any] | None:
    """A batch's conditioning (``result.Conditioning.as_dict``) with JSON-safe numbers."""
    if c is None:
        return None
    return {**c, "cosine": number(c.get("cosine")), "epsilon": number(c.get("epsilon")),
            "threshold": number(c.get("threshold")), "layers": [dict(d) for d in c.get("layers", [])],
            "input_shape": list(c.get("input_shape", []))}


def _statistics_dict(c: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the BatchNorm running statistics in a batch's update reveal (``result.BufferLeak.as_dict``), with
    JSON-safe numbers."""
    if c is None:
        return None
    return {**c, "seconds": number(c.get("seconds")),
            "layers": [{**d, "mean_error": number(d.get("mean_error")), "var_error": number(d.get("var_error")),
                        "activation_error": number(d.get("activation_error"))} for d in c.get("layers", [])]}


def batch_statement(audited: int, client: int | None, batchnorm: str, has_batchnorm: bool) -> str:
    """What the audited batch says about the batch the clients really train with (``--client-batch-size``)."""
    if client is None:
        return (f"audited at batch {audited}; the clients' batch was not stated (--client-batch-size): the verdict "
                f"holds for updates computed on {audited} sample(s)")
    if client == audited:
        return f"audited at batch {audited}, the batch the clients train with"
    bn = has_batchnorm and batchnorm == "train"
    if audited < client:
        text = (f"audited at batch {audited}, but the clients train at {client}: one real update averages {client} "
                f"samples' gradients, so this scan overstates what one update leaks about one sample (a leak here "
                f"is an upper bound; rescan with --batch-size {client} to measure the real update)")
        if bn:
            text += (f"; the model's train-mode BatchNorm layers normalise {client / audited:.3g}x more values per "
                     "channel at the real batch, which changes the update's conditioning and what its BatchNorm "
                     "statistics reveal")
        return text
    text = (f"audited at batch {audited}, but the clients train at {client}: a real update averages fewer samples "
            f"than the audited one, so this scan understates what one update leaks (a pass here does not cover "
            f"the real update; rescan with --batch-size {client})")
    if bn:
        text += ("; at the smaller real batch the model's train-mode BatchNorm layers see fewer values per channel "
                 "(possibly two, whose statistics reveal the activations)")
    return text


def _coverage_sample(s: SampleCoverage, modality: str) -> dict[str, Any]:
    out = {"index": s.index, "name": s.name, "label": s.label, "batch": s.batch, "position": s.position,
           "attack": s.attack, "metrics": _metrics(s.metrics), "recognised": s.recognised, "rules": list(s.rules),
           "reconstruction": s.reconstruction, "references": s.references, "transform": s.transform,
           "explanation": explain(s.metrics, s.references, s.transform, modality)}
    if s.recovered:
        out["recovered_columns"] = list(s.recovered)
    return out


def by_group(samples: Sequence[SampleCoverage], key: str) -> list[dict[str, Any]]:
    """The leak rate per batch position or per label: [{value, audited, recognised, fraction}]."""
    groups: dict[Any, list[SampleCoverage]] = {}
    for s in samples:
        groups.setdefault(getattr(s, key), []).append(s)
    out = []
    for value in sorted(groups, key=lambda v: (v is None, v)):
        members = groups[value]
        k = sum(1 for s in members if s.recognised)
        out.append({key: value, "audited": len(members), "recognised": k, "fraction": k / len(members)})
    return out


def _coverage(c: CoverageOutcome | None, modality: str) -> dict[str, Any] | None:
    """Every batch of the scan (schema 1.4): per sample the best attack and its scores, the recognised fraction
    with its interval, the worst sample, and the rate per batch position and per label."""
    if c is None:
        return None
    from ..result import worst_key

    lower, upper = c.interval
    worst = max(c.samples, key=lambda s: (worst_key(s, c.ranking_metric), -s.index)) if c.samples else None
    return {
        "available": c.available, "planned": c.planned, "audited": c.audited, "drawn": c.drawn,
        "batch_size": c.batch_size, "batches_planned": c.batches_planned, "batches_run": len(c.batches),
        "remainder": c.remainder, "resumed_batches": c.resumed, "criterion": list(c.criterion),
        "ranking_metric": c.ranking_metric, "recognised": c.recognised, "fraction": number(c.fraction),
        "interval": {"method": "clopper-pearson", "confidence": c.confidence, "lower": number(lower),
                     "upper": number(upper)},
        "worst": _coverage_sample(worst, modality) if worst is not None else None,
        "shown_batch": c.shown_batch,
        "by_position": by_group(c.samples, "position"),
        "by_label": by_group(c.samples, "label"),
        "batches": [{"index": b.index, "seed": b.seed, "size": b.size, "overall": b.overall,
                     "crashed_attacks": list(b.crashed), "control_reconstructed": b.control,
                     "seconds": number(b.seconds), "conditioning": _conditioning_dict(b.conditioning),
                     "batchnorm_statistics": _statistics_dict(b.batchnorm_statistics)}
                    for b in c.batches],
        "samples": [_coverage_sample(s, modality) for s in c.samples],
    }


def _settings(settings: Any) -> dict[str, Any]:
    """The scan's settings, without where its batches ran (the rows of role "execution"): the report is the
    same."""
    from ..config import settings_in_roles

    if settings is None:
        return {}
    return _jsonable(settings_in_roles(settings, "result", "presentation"))


def _criterion(result: AuditResult) -> tuple[Any, ...]:
    """The rules that define "recognised" (the coverage's criterion), as objects ``fires_on`` reads."""
    from types import SimpleNamespace

    rules = result.coverage.criterion_rules if result.coverage else ()
    if not rules:  # a result without coverage (audit_loaded alone): the profile's own per-sample fail rules
        from ..verdict.rules import per_sample

        return tuple(r for r in result.rules if r.severity == "fail" and per_sample(r)  # type: ignore[arg-type]
                     and r.status != "not_applicable")
    return tuple(SimpleNamespace(**r) for r in rules)


# What "recognised" rests on, per modality (docs/recognition.md, docs/tabular.md, docs/text.md).
_DEFINITIONS = {
    "image": ("attributable to its own sample (closer to it, after flip/shift/level registration, than to every "
              "reference) and better than a blank or heavily blurred copy of it"),
    "tabular": ("attributable to its own record (more of its features recovered than of every reference record's) "
                "and better than guessing each column's most common value or mean"),
    "text": ("attributable to its own line (closer to it in token F1 than to every reference line) and better than "
             "the references' most frequent words"),
}


def _recognition(result: AuditResult, criterion: tuple[Any, ...]) -> dict[str, Any]:
    """What "recognised" means in this report, what it was compared with, and how often chance matches."""
    from ..metrics.recognition import MIN_REFERENCES

    ks = [s.references for s in (result.coverage.samples if result.coverage else ()) if s.references is not None]
    ks += [s.references for a in result.attacks for s in a.samples if s.references is not None]
    k = min(ks) if ks else None
    weak = k is not None and k < MIN_REFERENCES
    modality = result.data.modality
    text = ("" if k is None else
            f"a reconstruction with no information about its sample is matched to it by chance with probability "
            f"1/{k + 1}" + (f"; only {k} references: per-sample evidence is weak (give --reference-data with at "
                            f"least {MIN_REFERENCES} {words(modality).item}s like your samples)" if weak else ""))
    return {
        "definition": _DEFINITIONS.get(modality, _DEFINITIONS["image"]),
        "criterion": [{"id": r.id, "metric": r.metric, "comparison": r.comparison, "threshold": number(r.threshold),
                       "max_p": r.max_p} for r in criterion],
        "references": result.references,
        "min_references": k,
        "chance": None if k is None else 1.0 / (k + 1),
        "weak_evidence": weak,
        "text": text,
    }


def build_document(result: AuditResult, *, embed_data: bool = False) -> dict[str, Any]:
    m, t = result.model, result.threat
    criterion = _criterion(result)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "leakaudit", "version": __version__},
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "executable_bits": 64 if sys.maxsize > 2**32 else 32,
            "libraries": library_versions(),
        },
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "duration_seconds": number((result.finished_at - result.started_at).total_seconds()),
        "incomplete": result.incomplete,
        "incomplete_reason": result.incomplete_reason,
        "command": result.command,
        "command_reason": result.command_reason,
        "seed": result.seed,
        "device": result.device,
        "settings": _settings(result.settings),
        "model": {
            "path": m.path, "sha256": m.sha256, "format": m.format, "arch": m.arch,
            "input_shape": list(m.input_shape), "num_classes": m.num_classes, "num_trainable": m.num_trainable,
            "onnx": None if m.onnx_opset is None else {
                "opset": m.onnx_opset, "producer": m.onnx_producer, "looks_eval_exported": m.looks_eval_exported},
        },
        "findings": _findings(result),
        "data": _data(result, embed_data),
        "threat_model": {
            "protocol": t.protocol, "batch_size": t.batch_size, "local_steps": t.local_steps,
            "local_lr": number(t.local_lr), "labels_known": t.labels_known, "loss": getattr(t, "loss", "cross_entropy"),
            "batchnorm": getattr(t, "batchnorm", "train"), "buffers": bool(getattr(t, "buffers", False)),
            "client_batch_size": result.settings.client_batch_size if result.settings else None,
            "batch_statement": batch_statement(t.batch_size, result.settings.client_batch_size if result.settings
                                               else None, getattr(t, "batchnorm", "train"),
                                               bool(result.findings.batchnorm)),
        },
        "defenses": [{"name": d.name, "params": _jsonable(d.params), "text": str(d)} for d in t.defenses],
        "label_recovery": None if result.label_recovery is None else {
            "known": result.label_recovery.known,
            "strategy": result.label_recovery.strategy,
            "labels": list(result.label_recovery.labels),
            "accuracy": number(result.label_recovery.accuracy),
        },
        "attacks": [_attack(a, criterion, embed_data, result.data.records, result.data.pixels, result.data.modality)
                    for a in result.attacks],
        "records": _records(result),
        "recognition": _recognition(result, criterion),
        "rules": _rules(result),
        "verdict": _verdict(result),
        "control": _control(result.control),
        "defense_cost": _defense_cost(result.defense_cost),
        "conditioning": _conditioning_dict(result.conditioning.as_dict()) if result.conditioning else None,
        "batchnorm_statistics": _statistics_dict(result.batchnorm_statistics.as_dict())
        if result.batchnorm_statistics else None,
        "coverage": _coverage(result.coverage, result.data.modality),
        "notes": list(result.notes),
        # every [[ignore]] entry that applies to the model (schema 1.7; leakaudit.suppress), active or expired
        "suppressions": [dataclasses.asdict(s) for s in result.suppressions],
    }
    doc["budget"] = describe_budget(doc)  # what ran, not only the budget's name (overrides change it)
    doc["recommendations"] = recommend(doc)
    if doc["verdict"]["overall"] == "inconclusive" and not ill_conditioned(doc):
        doc["recommendations"].insert(0, {
            "id": "inconclusive", "title": "Give the attacks the power to reconstruct the undefended case",
            "text": INCONCLUSIVE_ADVICE, "because": result.control.evidence if result.control else ""})
    return doc
