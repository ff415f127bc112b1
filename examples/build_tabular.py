"""Build the bundled tabular example: a synthetic patient table and a small MLP trained on it.

Run from anywhere (outputs go next to this file):

    python examples/build_tabular.py

Why synthetic patients rather than one of scikit-learn's tables: a hospital's records mix continuous columns
(age, blood pressure) with categorical ones (sex, smoking, blood type) -- the mixed case TabLeak was built for,
which scikit-learn's bundled tables (breast cancer, wine, iris, diabetes: continuous features only) do not
exercise -- and the records are invented, so no real person is in them. The label is a ``diagnosis``
(negative/positive) drawn from a fixed logistic model of the features.

Outputs: ``models/tabular_mlp.onnx`` (21 encoded inputs -> Linear 32 with bias -> ReLU -> Linear 2, trained
300 Adam steps; exported in training mode), ``records/patients.csv`` (64 records: the scanned ones
and each other's references), ``records/references.csv`` (64 more records, for --reference-data) and
``records/schema.json`` (the columns, the one-hot orders and the training data's mean/std).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OUT = HERE / "records"
MODEL = HERE / "models" / "tabular_mlp.onnx"
SEED = 23

CONTINUOUS = ("age", "bmi", "systolic_bp", "cholesterol", "glucose")
CATEGORICAL = {
    "sex": ("female", "male"),
    "smoker": ("never", "former", "current"),
    "blood_type": ("A", "B", "AB", "O"),
    "region": ("north", "south", "east", "west"),
    "insurance": ("public", "private", "none"),
}
LABEL = "diagnosis"
CLASSES = ("negative", "positive")


def patients(n: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Invented records: plausible ranges and correlations, nothing real."""
    rows = []
    for _ in range(n):
        age = float(np.clip(rng.normal(52, 15), 18, 95))
        sex = str(rng.choice(CATEGORICAL["sex"]))
        bmi = float(np.clip(rng.normal(27 + (age - 50) * 0.03, 4.5), 16, 50))
        smoker = str(rng.choice(CATEGORICAL["smoker"], p=[0.55, 0.25, 0.20]))
        bp = float(np.clip(rng.normal(118 + 0.45 * (age - 50) + 0.8 * (bmi - 27), 13), 85, 210))
        chol = float(np.clip(rng.normal(195 + 0.6 * (age - 50) + (12 if smoker == "current" else 0), 32), 110, 340))
        glucose = float(np.clip(rng.normal(96 + 1.6 * (bmi - 27), 17), 60, 260))
        blood = str(rng.choice(CATEGORICAL["blood_type"], p=[0.42, 0.10, 0.04, 0.44]))
        region = str(rng.choice(CATEGORICAL["region"]))
        insurance = str(rng.choice(CATEGORICAL["insurance"], p=[0.55, 0.38, 0.07]))
        logit = (0.05 * (age - 52) + 0.12 * (bmi - 27) + 0.03 * (bp - 120) + 0.04 * (glucose - 100)
                 + 0.6 * (smoker == "current") - 0.3 * (sex == "female") + rng.normal(0, 0.5))
        diagnosis = CLASSES[int(logit > 0.4)]
        rows.append({"age": round(age), "bmi": round(bmi, 1), "systolic_bp": round(bp), "cholesterol": round(chol),
                     "glucose": round(glucose), "sex": sex, "smoker": smoker, "blood_type": blood,
                     "region": region, "insurance": insurance, LABEL: diagnosis})
    return rows


def encode(rows: list[dict[str, object]], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The schema's layout (leakaudit.data.tabular): standardised continuous columns, then one-hot groups."""
    out = []
    for r in rows:
        values = [(float(r[c]) - m) / s for c, m, s in zip(CONTINUOUS, mean, std, strict=True)]  # type: ignore[arg-type]
        for name, cats in CATEGORICAL.items():
            values += [1.0 if r[name] == c else 0.0 for c in cats]
        out.append(values)
    return np.asarray(out, dtype=np.float32)


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*CONTINUOUS, *CATEGORICAL, LABEL], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def build() -> None:
    rng = np.random.default_rng(SEED)
    train, scanned, references = patients(1024, rng), patients(64, rng), patients(64, rng)
    cont = np.asarray([[float(r[c]) for c in CONTINUOUS] for r in train])  # type: ignore[arg-type]
    mean, std = cont.mean(0).round(4), cont.std(0).round(4)  # as the schema states them
    x = torch.from_numpy(encode(train, mean, std))
    y = torch.tensor([CLASSES.index(str(r[LABEL])) for r in train])
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, len(CLASSES)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # brief: a model mid-training, as a client receives it, not one trained to the end
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        test = torch.from_numpy(encode(scanned, mean, std))
        accuracy = (model(test).argmax(1) == torch.tensor([CLASSES.index(str(r[LABEL])) for r in scanned]))
    print(f"training loss {loss.item():.3f}, accuracy on the 64 scanned records {accuracy.float().mean():.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    write_csv(OUT / "patients.csv", scanned)
    write_csv(OUT / "references.csv", references)
    schema = {"continuous": list(CONTINUOUS), "categorical": {k: list(v) for k, v in CATEGORICAL.items()},
              "label": LABEL, "classes": list(CLASSES),
              "mean": {c: float(m) for c, m in zip(CONTINUOUS, mean, strict=True)},
              "std": {c: float(s) for c, s in zip(CONTINUOUS, std, strict=True)}}
    (OUT / "schema.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    sys.path.insert(0, str(HERE))
    try:
        from build_examples import export_onnx
    finally:
        sys.path.remove(str(HERE))
    export_onnx(model, MODEL, training=True, shape=(x.shape[1],))
    print(f"wrote {MODEL.name} and {OUT.relative_to(HERE)}/")


if __name__ == "__main__":
    build()
