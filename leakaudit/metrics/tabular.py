"""Scoring reconstructed tabular records: which features came back, and is the record recognised?

A feature is recovered when a categorical one has its true category and a continuous one lies within
``data.tabular.TOLERANCE`` column standard deviations of the truth (``TabularSchema.hits``). Per record:

* ``categorical_match`` / ``continuous_match``: the fraction of its categorical / continuous features recovered;
* ``record_match``: the fraction of all its features recovered (the record's accuracy);
* ``match_p``: the recognition test's p-value, exactly as for images (``metrics.recognition``): (1 + the
  references whose own accuracy against the reconstruction is at least the true record's) / (K + 1), with the
  scan's other records and ``--reference-data`` records as the K references (copies of the record left out);
* ``record_skill``: (accuracy - baseline) / (1 - baseline), the baseline being the accuracy of the references'
  column-wise mode/mean record against the true record: 0 = no better than guessing every column's most common
  value, 1 = exact.

Importing this module registers the metrics (no torch at import: the registry is read without it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from ..registry import Registry
from .interface import Metric

if TYPE_CHECKING:
    import torch

    from ..data.tabular import TabularSchema
    from .scoring import AttackScore

TABULAR_METRICS: tuple[str, ...] = ("record_match", "categorical_match", "continuous_match", "record_skill")


def register(metrics: Registry[Metric]) -> None:
    def add(metric: Metric) -> None:
        metrics.register(metric.name)(metric)

    add(Metric("record_match", True, "higher", (0.0, 1.0),
               "fraction of a record's features recovered: categorical ones exactly, continuous ones within 0.1 "
               "of the column's standard deviation", modality="tabular", recognition=True))
    add(Metric("categorical_match", True, "higher", (0.0, 1.0),
               "fraction of a record's categorical features recovered exactly", modality="tabular",
               recognition=True))
    add(Metric("continuous_match", True, "higher", (0.0, 1.0),
               "fraction of a record's continuous features recovered within 0.1 of the column's standard "
               "deviation", modality="tabular", recognition=True))
    add(Metric("record_skill", True, "higher", (-math.inf, 1.0),
               "record score: (a - a_base) / (1 - a_base) with a the record's accuracy (record_match) and a_base "
               "that of the references' column-wise mode/mean record; 0 = no better than guessing every column's "
               "most common value, 1 = exact", modality="tabular", recognition=True))


def _accuracy(schema: TabularSchema, recovered: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean of ``hits`` over the features (broadcasting over leading dimensions)."""
    return schema.hits(recovered, true).double().mean(-1)


def baseline_record(schema: TabularSchema, references: torch.Tensor) -> torch.Tensor:
    """The column-wise guess from the references alone: each continuous column's mean, each categorical one's
    most frequent category (the first in schema order on a tie), encoded."""
    import torch

    out = torch.zeros(schema.width)
    for k, (s, e) in enumerate(schema.spans()):
        if schema.is_categorical(k):
            counts = torch.bincount(references[:, s:e].argmax(-1), minlength=e - s)
            out[s + int(counts.argmax())] = 1.0
        else:
            out[s] = references[:, s].mean() if len(references) else 0.0
    return out


def score_records(recovered: torch.Tensor, batch: Any, *, references: torch.Tensor | None, attack: str = "",
                  labels_recovered: torch.Tensor | Sequence[int] | None = None) -> AttackScore:
    """Score reconstructed records (model space, (N, width)) against the batch's (``SampleBatch`` of modality
    tabular). Reconstructions are matched one-to-one to records by accuracy (Hungarian) first."""
    import torch

    from .scoring import AttackScore, SampleScore, _label_accuracy, _labels

    schema = batch.records.schema
    true = batch.x.detach().cpu().reshape(len(batch), -1).float()
    rec = recovered.detach().cpu().reshape(recovered.shape[0], -1).float()
    if not bool(torch.isfinite(rec).all()):
        why = "the reconstruction contains NaN or infinite values: the attack diverged"
        return AttackScore(attack=attack, samples=(), means={}, unavailable={m: why for m in TABULAR_METRICS},
                           notes=(why,), matched_by="record_match", modality="tabular")
    acc = _accuracy(schema, rec[:, None, :], true[None, :, :])  # (recovered, true)
    pairs = _pairs(acc)
    pool = references.detach().cpu().reshape(references.shape[0], -1).float() if references is not None \
        else torch.zeros(0, schema.width)
    # the batch's other records are references too (the scan's references usually hold them already)
    fresh = [row for row in true if not bool((pool == row).all(-1).any())]
    pool = torch.cat([pool, torch.stack(fresh)]) if fresh else pool
    labels_true, labels_rec = _labels(batch.y), _labels(labels_recovered)
    cats = [k for k in range(len(schema.columns)) if schema.is_categorical(k)]
    conts = [k for k in range(len(schema.columns)) if not schema.is_categorical(k)]
    samples = []
    for r, c in pairs:
        hit = schema.hits(rec[r], true[c]).double()
        own = float(hit.mean())
        others = pool[~(pool == true[c]).all(-1)]  # the record and its copies are not its own references
        ref_acc = _accuracy(schema, rec[r][None, :], others) if len(others) else torch.zeros(0)
        k = int(others.shape[0])
        match_p = (1 + int((ref_acc >= own - 1e-12).sum())) / (k + 1)
        base = float(_accuracy(schema, baseline_record(schema, others), true[c])) if k else 0.0
        skill = (own - base) / (1 - base) if base < 1 else 0.0
        metrics = {"record_match": own, "record_skill": skill, "match_p": match_p}
        if cats:
            metrics["categorical_match"] = float(hit[cats].mean())
        if conts:
            metrics["continuous_match"] = float(hit[conts].mean())
        samples.append(SampleScore(
            index=r, original_index=c, name=batch.names[c], metrics=metrics,
            label_true=labels_true[c] if labels_true is not None and c < len(labels_true) else None,
            label_recovered=labels_rec[r] if labels_rec is not None and r < len(labels_rec) else None,
            references=k, transform=""))
    names = sorted({m for s in samples for m in s.metrics})
    means = {m: sum(s.metrics[m] for s in samples if m in s.metrics) / max(1, sum(m in s.metrics for s in samples))
             for m in names}
    unavailable: dict[str, str] = {}
    if not cats:
        unavailable["categorical_match"] = "the schema has no categorical column"
    if not conts:
        unavailable["continuous_match"] = "the schema has no continuous column"
    accuracy = _label_accuracy(labels_true, labels_rec, means, unavailable)
    return AttackScore(attack=attack, samples=tuple(samples), means=means, label_accuracy=accuracy,
                       unavailable=unavailable, matched_by="record_match", modality="tabular")


def _pairs(acc: torch.Tensor) -> list[tuple[int, int]]:
    """(reconstruction, record) pairs maximising the total accuracy; a batch of one needs no solver."""
    n_rec, n_true = acc.shape
    if n_rec == 1 and n_true == 1:
        return [(0, 0)]
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(acc.numpy(), maximize=True)
    return sorted(zip((int(r) for r in rows), (int(c) for c in cols), strict=True), key=lambda rc: rc[1])


def column_recovery(schema: TabularSchema, recovered: torch.Tensor, true: torch.Tensor) -> list[bool]:
    """Per feature of one record: recovered?"""
    return [bool(v) for v in schema.hits(recovered.reshape(-1).float(), true.reshape(-1).float())]
