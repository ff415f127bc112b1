"""TabLeak on encoded records: one-hot groups relaxed, restarts pooled per feature with their disagreement."""

from __future__ import annotations

from pathlib import Path

import torch

from leakaudit.attacks import AttackTarget, run_attack
from leakaudit.attacks.tableak import pool
from leakaudit.models.load import load_model
from leakaudit.update import ThreatModel, client_update
from leakaudit.data.tabular import load_records
from leakaudit.detect import detect

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "records"


def test_restarts_are_pooled_by_median_and_mode_with_entropy_and_spread() -> None:
    features = ((0, 1, False), (1, 4, True))
    runs = [torch.tensor([[v, *onehot]]) for v, onehot in
            ((1.0, (1.0, 0, 0)), (2.0, (1.0, 0, 0)), (9.0, (0, 1.0, 0)), (3.0, (1.0, 0, 0)))]
    pooled, spread = pool(runs, 0, features)
    assert pooled.tolist() == [[2.0, 1.0, 0.0, 0.0]]  # torch's median: the lower middle of 1, 2, 3, 9
    p = torch.tensor([0.75, 0.25])
    assert abs(float(spread[0, 1]) - float(-(p * p.log()).sum() / torch.log(torch.tensor(3.0)))) < 1e-6
    assert abs(float(spread[0, 0]) - float(torch.tensor([1.0, 2.0, 9.0, 3.0]).std(unbiased=False))) < 1e-6


def test_tableak_recovers_an_undefended_record_exactly_in_its_categories() -> None:
    model = load_model(ROOT / "examples" / "models" / "tabular_mlp.onnx")
    batch = load_records(DATA / "patients.csv", input_shape=(21,), num_classes=2,
                         schema=DATA / "schema.json").select([44])
    update = client_update(model, batch, ThreatModel(batch_size=1), detect(model), seed=0)
    schema = batch.records.schema
    features = tuple((s, e, schema.is_categorical(k)) for k, (s, e) in enumerate(schema.spans()))
    target = AttackTarget(module=model.module, gradients=update.gradients, input_shape=(21,), num_classes=2,
                          labels=batch.y, features=features)
    recon = run_attack("tableak", target, budget="quick", device="cpu", seed=0)
    hits = schema.hits(recon.x[0], batch.x[0])
    assert bool(hits[len(schema.continuous):].all())  # every categorical feature
    assert recon.feature_spread is not None and recon.feature_spread.shape == (1, len(schema.columns))
