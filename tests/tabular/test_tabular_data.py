"""Tabular records: a CSV and its schema become the model's input, and every bad record is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leakaudit.cli import app_main
from leakaudit.data.tabular import load_records
from leakaudit.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "records"
MODEL = ROOT / "examples" / "models" / "tabular_mlp.onnx"


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SCHEMA = {"continuous": ["age", "bp"], "categorical": {"smoker": ["never", "current", "former"]}, "label": "dx",
          "mean": {"age": 50.0, "bp": 120.0}, "std": {"age": 10.0, "bp": 20.0}, "classes": ["neg", "pos"]}


def test_a_record_is_encoded_in_the_schemas_order_with_its_statistics(tmp_path: Path) -> None:
    data = _csv(tmp_path / "r.csv", "smoker,bp,age,dx\nformer,140,60,pos\nnever,100,35,neg\n")
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    batch = load_records(data, input_shape=(5,), num_classes=2, schema=schema)
    # continuous first, standardised with the schema's mean/std; then smoker one-hot in the schema's order
    assert batch.x.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0], [-1.5, -1.0, 1.0, 0.0, 0.0]]
    assert batch.y.tolist() == [1, 0] and batch.modality == "tabular" and torch.equal(batch.pixels, batch.x)
    assert batch.records.rows[0] == (60.0, 140.0, "former")
    assert batch.records.schema.decode(batch.x) == [[60.0, 140.0, "former"], [35.0, 100.0, "never"]]


def test_without_a_schema_numbers_are_continuous_and_the_rest_categorical_sorted(tmp_path: Path) -> None:
    data = _csv(tmp_path / "r.csv", "age,sex,city,label\n30,m,rome,1\n50,f,oslo,0\n40,f,bern,1\n")
    batch = load_records(data, input_shape=(6,), num_classes=2, schema=None)
    schema = batch.records.schema
    assert schema.inferred and schema.label == "label" and schema.continuous == ("age",)
    assert schema.categorical == (("sex", ("f", "m")), ("city", ("bern", "oslo", "rome")))
    # standardised with the file's own statistics (population std)
    assert schema.mean == (40.0,) and abs(schema.std[0] - (200 / 3) ** 0.5) < 1e-9
    assert schema.stats_from == "r.csv" and batch.y.tolist() == [1, 0, 1]
    other = load_records(data, input_shape=(4,), num_classes=3, schema=None, label_column="city")
    assert other.records.schema.classes == ("bern", "oslo", "rome") and other.y.tolist() == [2, 1, 0]


@pytest.mark.parametrize("text, width, message", [
    ("age,bp,dx\n60,140,pos\n", 5, "column(s) smoker named by the schema are missing from the header"),
    ("age,bp,smoker,dx\nnan,140,never,pos\n", 5, "record 1, column age: 'nan' is not a finite number"),
    ("age,bp,smoker,dx\n61,,never,pos\n", 5, "record 1, column bp: '' is not a finite number"),
    ("age,bp,smoker,dx\n61,140,sometimes,pos\n", 5, "column smoker: category 'sometimes' is not one of the "
                                                    "schema's (never, current, former)"),
    ("age,bp,smoker,dx\n61,140,never,maybe\n", 5, "label dx: 'maybe' is not one of the classes (neg, pos)"),
    ("age,bp,smoker,dx\n61,140,never,pos\n", 7, "the encoded record has 5 values but the model's input has 7 "
                                                "(shape (7,)): continuous age, bp; categorical smoker (3 categories)"),
])
def test_a_bad_record_is_one_error_naming_the_record_and_column(tmp_path: Path, text: str, width: int,
                                                                  message: str) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    with pytest.raises(DataError, match=None) as info:
        load_records(_csv(tmp_path / "r.csv", text), input_shape=(width,), num_classes=2, schema=schema)
    assert message in str(info.value) and str(info.value).startswith(str(tmp_path / "r.csv"))


def test_scan_exits_2_with_one_line_on_a_record_that_does_not_fit(tmp_path: Path, capsys) -> None:
    bad = _csv(tmp_path / "p.csv", (EXAMPLE / "patients.csv").read_text().replace(",smoker,", ",smoking,", 1))
    code = app_main(["scan", str(MODEL), "--data", str(bad), "--schema", str(EXAMPLE / "schema.json"),
                     "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert "column(s) smoker named by the schema are missing from the header" in err


def test_a_model_whose_input_is_not_the_encoded_width_is_refused_naming_both(tmp_path: Path, capsys) -> None:
    schema = json.loads((EXAMPLE / "schema.json").read_text())
    del schema["categorical"]["region"]
    (tmp_path / "s.json").write_text(json.dumps(schema))
    code = app_main(["scan", str(MODEL), "--data", str(EXAMPLE / "patients.csv"), "--schema",
                     str(tmp_path / "s.json"), "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "the encoded record has 17 values but the model's input has 21" in err


def test_an_npz_with_one_array_per_column_reads_like_a_csv(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "r.npz", age=np.array([60.0, 35.0]), bp=np.array([140.0, 100.0]),
             smoker=np.array(["former", "never"]), dx=np.array(["pos", "neg"]))
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    batch = load_records(tmp_path / "r.npz", input_shape=(5,), num_classes=2, schema=schema)
    assert batch.x.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0], [-1.5, -1.0, 1.0, 0.0, 0.0]]


def test_inspect_says_the_modality_and_why(capsys) -> None:
    assert app_main(["inspect", str(MODEL), "--records"]) == 0
    assert "modality     tabular (input is a flat vector of 21 features and the samples are tabular records" \
        in capsys.readouterr().out
    assert app_main(["inspect", str(MODEL), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["modality"] == "image" and "give a CSV or --schema" in found["modality_reason"]


def test_an_inferred_schema_is_stated_in_the_report(tmp_path: Path) -> None:
    from leakaudit.audit import audit
    from leakaudit.config import ScanSettings

    text = (EXAMPLE / "patients.csv").read_text()
    (tmp_path / "p.csv").write_text(text)
    result = audit(str(MODEL), str(tmp_path / "p.csv"), ScanSettings(samples=1, attacks=("analytic",),
                                                                     no_dropout=True, budget="quick"))
    note = next(n for n in result.notes if n.startswith("schema inferred"))
    # numbers continuous, the rest one-hot in sorted order: the example's schema has another order, so the
    # inferred encoding differs from what the model was trained on -- which is why the note names it
    assert "label diagnosis" in note and "smoker (current, former, never)" in note
