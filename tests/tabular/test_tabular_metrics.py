"""Scoring records: features recovered within the documented tolerance, recognition against the references."""

from __future__ import annotations

from pathlib import Path

import torch

from leakaudit.data.tabular import TOLERANCE, load_records, load_reference_records
from leakaudit.metrics.tabular import baseline_record, score_records

DATA = Path(__file__).resolve().parents[2] / "examples" / "records"


def _batch():
    return load_records(DATA / "patients.csv", input_shape=(21,), num_classes=2, schema=DATA / "schema.json")


def test_an_exact_record_is_recognised_and_the_mode_mean_record_scores_zero() -> None:
    batch = _batch()
    one, pool = batch.select([5]), batch.x
    exact = score_records(one.x, one, references=pool).samples[0].metrics
    assert exact["record_match"] == exact["record_skill"] == 1.0
    assert exact["match_p"] == 1 / 64  # closer to its own record than to each of the 63 others
    others = pool[torch.arange(len(pool)) != 5]
    trivial = score_records(baseline_record(one.records.schema, others)[None], one, references=pool)
    assert trivial.samples[0].metrics["record_skill"] == 0.0 and trivial.samples[0].metrics["match_p"] > 0.02


def test_a_continuous_value_counts_within_the_tolerance_and_not_beyond() -> None:
    batch = _batch()
    one = batch.select([0])
    near, far = one.x.clone(), one.x.clone()
    near[0, 0] += TOLERANCE * 0.9  # age off by 0.09 of its standard deviation
    far[0, 0] += TOLERANCE * 1.5
    m_near = score_records(near, one, references=batch.x).samples[0].metrics
    m_far = score_records(far, one, references=batch.x).samples[0].metrics
    assert m_near["continuous_match"] == 1.0 and m_far["continuous_match"] == 0.8


def test_reference_records_count_and_a_batch_is_matched_one_to_one() -> None:
    batch = _batch()
    refs = batch.records.schema.encode(load_reference_records(DATA / "references.csv", batch.records.schema))
    two = batch.select([3, 7])
    sc = score_records(two.x.flip(0), two, references=torch.cat([refs, batch.x]))
    assert [(s.index, s.original_index) for s in sc.samples] == [(1, 0), (0, 1)]
    assert all(s.references == 127 and s.metrics["record_match"] == 1.0 for s in sc.samples)
