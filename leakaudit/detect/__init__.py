"""Detection: the layers of a loaded model that change how its gradients leak.

``detect(model)`` runs one eval-mode pass to learn the forward order, finds dropout layers, PRECODE-style
bottlenecks and BatchNorm structurally, then (``probe=True``) runs two train-mode passes to catch randomness
the structural rules do not know. It never prints; what the user should know goes into ``Findings.warnings``.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..errors import setting_ref
from ..models.interface import LoadedModel
from .bottleneck import find_bottlenecks
from .dropout import find_dropout
from .interface import Bottleneck, DropoutLayer, Findings
from .modality import classify
from .probe import ROOT, stochastic_modules
from .trace import Trace, trace

EVAL_EXPORT_WARNING = (
    "{path}: the ONNX file has no Dropout nodes; it may have been trained with dropout that the export "
    "removed; re-export with training=TrainingMode.TRAINING or declare rates with --dropout LAYER=P "
    "(--no-dropout if the model has none)"
)
REEXPORT = ('torch.onnx.export(model.train(), x, "model.onnx", dynamo=False, '
            'training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)')
FOLDED_BATCHNORM_WARNING = {
    "recorded": (
        "{path}: the exporter folded {n} BatchNorm layer(s) into the convolutions before them (the file's node "
        "metadata records torch's dynamo exporter doing it): the file's function has no batch statistics and "
        "other weights than the client's train-mode model, so the client update computed from it, and the "
        "attacks on it, are not the client's: the verdict is about the folded function (audited with "
        "--allow-folded-batchnorm); re-export with " + REEXPORT),
    "suspected": (
        "{path}: the file has no BatchNormalization node and {n} Conv node(s) named the way torch's dynamo "
        "exporter names the convolutions it rewrites: it may have folded BatchNorm layers into them, and then "
        "the client update computed from this file is not the client's. Uncertain: the file carries no "
        "metadata to confirm it, and the same rewriter also renames a Conv whose all-zero bias it dropped; "
        "if the model has BatchNorm, re-export with " + REEXPORT),
}
DROPPED_ATTENTION_DROPOUT_WARNING = (
    "{path}: the exporter left out the attention dropout (rate {rates}) of {n} attention layer(s): the file's "
    "metadata records scaled_dot_product_attention called with that dropout_p, but none of its nodes draws "
    "random numbers, so the file computes attention without dropout and the client update computed from it "
    "is not the client's; re-export with " + REEXPORT)
BATCHNORM_WARNING = (
    "{n} BatchNorm layer(s): in train mode they normalise with the batch's own statistics, which mixes the "
    "samples of a batch and is itself information about them; the client update and the attacks use "
    "train-mode BatchNorm"
)
FOLDED_BATCHNORM_REFUSAL = (
    "{path}: the exporter folded {n} BatchNorm layer(s) into the convolutions before them (recorded in the "
    "file's node metadata), so the file is not the function your clients train and no verdict on it is about "
    "them; re-export with " + REEXPORT + " (the dynamo exporter folds BatchNorm even in training mode), or pass "
    + setting_ref("allow_folded_batchnorm") + " (config key allow_folded_batchnorm) to audit the folded function "
    "anyway")
UNRECOGNIZED_WARNING = (
    "unrecognized stochastic layer(s) {names}: no attack models their randomness, so a pass may understate "
    "what an adaptive attacker recovers; treat the scan's verdict as a lower bound on the leak"
)


def detect(model: LoadedModel, *, probe: bool = True, tabular: bool = False) -> Findings:
    """``tabular``: the samples are records (a CSV or a schema was given); see ``modality.classify``."""
    tr = trace(model)
    dropout, warnings = find_dropout(model, tr)
    bottlenecks = find_bottlenecks(model, tr)
    batchnorm = _batchnorm(model.module, tr)
    notes = [*warnings, *_export_notes(model)]
    if batchnorm:
        notes.append(BATCHNORM_WARNING.format(n=len(batchnorm)))
    unrecognized = _unrecognized(model, dropout, bottlenecks) if probe else ()
    if unrecognized:
        notes.append(UNRECOGNIZED_WARNING.format(names=", ".join(unrecognized)))
    if tr.unused_params:
        notes.append(f"{len(tr.unused_params)} trainable parameter(s) are not used by the forward pass "
                     f"(e.g. {tr.unused_params[0]}): they get no gradient and are not attacked")
    layers = _layers(model.module, tr)
    modality, why = classify(model, layers, tabular=tabular)
    return Findings(
        layers=layers,
        dropout=dropout,
        bottlenecks=bottlenecks,
        batchnorm=batchnorm,
        unrecognized_stochastic=unrecognized,
        warnings=tuple(notes),
        modality=modality,
        modality_reason=why,
    )


def _export_notes(model: LoadedModel) -> list[str]:
    """What the ONNX export removed or folded, as far as the file shows."""
    onnx = model.onnx
    if onnx is None:
        return []
    notes = []
    if onnx.looks_eval_exported and not model.declared_dropout:
        notes.append(EVAL_EXPORT_WARNING.format(path=model.path))
    if onnx.folded_batchnorm:
        notes.append(FOLDED_BATCHNORM_WARNING[onnx.folded_batchnorm].format(
            path=model.path, n=onnx.folded_batchnorm_count))
    dropped = onnx.dropped_attention_dropout
    if dropped:
        rates = ", ".join(f"{r:g}" for r in sorted(set(dropped)))
        notes.append(DROPPED_ATTENTION_DROPOUT_WARNING.format(path=model.path, rates=rates, n=len(dropped)))
    return notes


def _unrecognized(model: LoadedModel, dropout: tuple[DropoutLayer, ...],
                  bottlenecks: tuple[Bottleneck, ...]) -> tuple[str, ...]:
    """The stochastic modules neither a dropout layer nor a PRECODE bottleneck explains."""
    modules = dict(model.module.named_modules())
    explained = {d.name for d in dropout} | {b.name for b in bottlenecks}
    # A declared dropout runs in a forward hook of the layer it follows, so that layer's output is random.
    hosts = (getattr(modules.get(d.name), "after", None) for d in dropout if d.source == "declared")
    explained |= {h for h in hosts if h is not None}
    return tuple(n for n in stochastic_modules(model) if n not in explained)


def _batchnorm(module: nn.Module, tr: Trace) -> tuple[str, ...]:
    names = [n for n, m in module.named_modules()
             if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm))
             or type(m).__name__.startswith("BatchNorm")]
    return tuple(sorted(names, key=tr.position_of))


def _layers(module: nn.Module, tr: Trace) -> tuple[tuple[str, str, int], ...]:
    """Leaf modules in forward order with the trainable elements listed under them; a container that owns
    parameters directly (a ViT's class token) gets its own row where it starts."""
    params = dict(module.named_parameters())
    count: dict[str, int] = {}
    for pname, owner in tr.param_owner.items():
        count[owner] = count.get(owner, 0) + params[pname].numel()
    modules = dict(module.named_modules())
    leaf_names = {leaf.name for leaf in tr.leaves}
    containers = sorted((o for o in count if o not in leaf_names), key=tr.position_of)
    rows: list[tuple[int, int, tuple[str, str, int]]] = [
        (tr.position_of(o), 0, (o or ROOT, type(modules[o]).__name__ + " (own parameters)", count[o]))
        for o in containers]
    rows += [(i, 1, (leaf.name or ROOT, leaf.type, count.get(leaf.name, 0))) for i, leaf in enumerate(tr.leaves)]
    return tuple(r for _, _, r in sorted(rows, key=lambda r: (r[0], r[1])))


def findings_to_dict(findings: Findings) -> dict:
    """JSON-ready form (used by ``inspect --json`` and the reports)."""
    d = dataclasses.asdict(findings)
    d["layers"] = [{"name": n, "type": t, "trainable": k} for n, t, k in findings.layers]
    return d


__all__ = ["Bottleneck", "DropoutLayer", "Findings", "detect", "findings_to_dict"]
