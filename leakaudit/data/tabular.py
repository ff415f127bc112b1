"""Tabular records: a CSV (or .npz with named columns) and its schema, encoded into the model's input.

The schema (``--schema schema.json``) says what each column is::

    {"continuous": ["age", "bmi"], "categorical": {"sex": ["f", "m"], "smoker": ["no", "yes"]},
     "label": "diagnosis", "mean": {"age": 52.1}, "std": {"age": 13.4}, "classes": ["benign", "malignant"]}

The model's input is the encoded row: the continuous columns in the schema's order, standardised ((v - mean) /
std, with the schema's mean/std where it gives them, else the data file's), then each categorical column
one-hot in the schema's category order. ``mean``, ``std`` and ``classes`` are optional; without ``classes`` the
label's classes are its integer values, or its distinct values sorted. Without a schema one is inferred: the
label is ``--label-column`` or the last column, columns whose every value is a number are continuous, the
others categorical with their categories sorted; the report states what was inferred.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import DataError, argument_ref, setting_ref
from .interface import Normalization, SampleBatch

Value = Any  # float for a continuous column, str for a categorical one

# A continuous value counts as recovered within this many of its column's standard deviations (the schema's std,
# the one the model's input is standardised with). Measured on the example table (docs/tabular.md,
# `benchmarks/bench_tabular.py --trivial`): a random reference record lands this close on 4.7% of the continuous
# values and the column mean on 6.6%; at 0.25 sd they would on 11.6% and 19.7%, so a wider tolerance would
# credit guesses. The exact attack's recoveries are far inside it.
TOLERANCE = 0.1


@dataclass(frozen=True)
class TabularSchema:
    continuous: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]  # (column, categories in one-hot order)
    label: str
    mean: tuple[float, ...]  # one per continuous column
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()  # the label's values in class-index order; empty: integer labels
    inferred: bool = False  # True: leakaudit inferred it (no schema given)
    stats_from: str = "schema"  # where mean/std come from: "schema", or the data file's name

    @property
    def columns(self) -> tuple[str, ...]:
        """The features in encoded order (the label is not one)."""
        return self.continuous + tuple(name for name, _ in self.categorical)

    @property
    def width(self) -> int:
        return len(self.continuous) + sum(len(c) for _, c in self.categorical)

    def spans(self) -> tuple[tuple[int, int], ...]:
        """Each feature's [start, end) in the encoded row, in ``columns`` order."""
        out = [(i, i + 1) for i in range(len(self.continuous))]
        start = len(self.continuous)
        for _, cats in self.categorical:
            out.append((start, start + len(cats)))
            start += len(cats)
        return tuple(out)

    def is_categorical(self, column: int) -> bool:
        return column >= len(self.continuous)

    def hits(self, recovered: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """(…, width) encoded rows -> (…, features) bool: each feature recovered? Categorical: the same category
        (argmax); continuous: within ``TOLERANCE`` column standard deviations (in the encoded space, where one
        unit is one standard deviation)."""
        out = []
        for k, (s, e) in enumerate(self.spans()):
            if self.is_categorical(k):
                out.append(recovered[..., s:e].argmax(-1) == true[..., s:e].argmax(-1))
            else:
                out.append((recovered[..., s] - true[..., s]).abs() <= TOLERANCE + 1e-9)
        return torch.stack(out, -1)

    def encode(self, rows: Sequence[Sequence[Value]]) -> torch.Tensor:
        """Raw rows (``columns`` order) -> (N, width) model input."""
        x = torch.zeros(len(rows), self.width)
        nc = len(self.continuous)
        for r, row in enumerate(rows):
            for j in range(nc):
                x[r, j] = (float(row[j]) - self.mean[j]) / self.std[j]
            start = nc
            for k, (_, cats) in enumerate(self.categorical):
                x[r, start + cats.index(str(row[nc + k]))] = 1.0
                start += len(cats)
        return x

    def decode(self, x: torch.Tensor) -> list[list[Value]]:
        """(N, width) model-space rows -> raw rows: continuous de-standardised, categorical by argmax."""
        x = x.detach().cpu().reshape(x.shape[0], -1).double()
        out = []
        for row in x:
            values: list[Value] = [float(row[j]) * self.std[j] + self.mean[j] for j in range(len(self.continuous))]
            start = len(self.continuous)
            for _, cats in self.categorical:
                values.append(cats[int(torch.argmax(row[start:start + len(cats)]))])
                start += len(cats)
            out.append(values)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"continuous": list(self.continuous), "categorical": {n: list(c) for n, c in self.categorical},
                "label": self.label, "mean": dict(zip(self.continuous, self.mean, strict=True)),
                "std": dict(zip(self.continuous, self.std, strict=True)), "classes": list(self.classes),
                "inferred": self.inferred, "stats_from": self.stats_from}


@dataclass(frozen=True)
class TabularRecords:
    """A batch's records as read (``SampleBatch.records``): the schema and each row's raw values."""

    schema: TabularSchema
    rows: tuple[tuple[Value, ...], ...] = field(repr=False)
    # every record of the file, encoded: the scan's other records are each record's references (a batch of one
    # keeps them)
    table: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def select(self, index: list[int]) -> "TabularRecords":
        return TabularRecords(self.schema, tuple(self.rows[i] for i in index), self.table)


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV, or of an .npz whose arrays are the columns (one 1-D array per column)."""
    if path.suffix.lower() == ".npz":
        return _npz_table(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read it as CSV ({e}); give a UTF-8 CSV with a header row") from e
    if len(table) < 2:
        raise DataError(f"{path}: no records (a header row and at least one record are needed)")
    header = [h.strip() for h in table[0]]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}: the header row has empty or repeated column names; name every column once")
    for i, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {i} has {len(row)} value(s) but the header names {len(header)} "
                            "columns; fix the row")
    return header, [[c.strip() for c in row] for row in table[1:]]


def _npz_table(path: Path) -> tuple[list[str], list[list[str]]]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 -- any unreadable archive is the user's file, not a bug
        raise DataError(f"{path}: cannot read it as .npz ({e}); give one 1-D array per column") from e
    lengths = {a.shape for a in arrays.values()}
    if not arrays or any(a.ndim != 1 for a in arrays.values()) or len(lengths) != 1:
        raise DataError(f"{path}: records need one 1-D array per column, all of the same length; got "
                        + ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items()))
    header = list(arrays)
    n = next(iter(lengths))[0]
    return header, [[_cell(arrays[k][i]) for k in header] for i in range(n)]


def _cell(value: Any) -> str:
    """An array element as the CSV reader would give it: floats in full precision, the rest as text."""
    if getattr(value, "dtype", None) is not None and value.dtype.kind == "f":
        return repr(float(value))
    return str(value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def load_schema(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{p}: cannot read the schema ({e.strerror or e}); point {setting_ref('schema')} at a JSON "
                        "file") from e
    except ValueError as e:
        raise DataError(f"{p}: not valid JSON ({e}); fix the schema file") from e
    ok = isinstance(raw, dict) and isinstance(raw.get("continuous", []), list) \
        and isinstance(raw.get("categorical", {}), dict) and isinstance(raw.get("label"), str)
    if ok:
        ok = all(isinstance(v, list) and v and all(isinstance(c, (str, int, float)) for c in v)
                 for v in raw.get("categorical", {}).values())
    if not ok:
        raise DataError(f'{p}: a schema is {{"continuous": [names], "categorical": {{name: [categories]}}, '
                        f'"label": name}} (optional "mean", "std": {{name: number}}, "classes": [labels]); fix it')
    return raw


def infer_schema(header: list[str], rows: list[list[str]], label: str) -> dict[str, Any]:
    """Numeric columns continuous, the others categorical with sorted categories."""
    continuous, categorical = [], {}
    for j, name in enumerate(header):
        if name == label:
            continue
        values = [r[j] for r in rows]
        if all(_number(v) is not None for v in values):
            continuous.append(name)
        else:
            categorical[name] = sorted(set(values))
    return {"continuous": continuous, "categorical": categorical, "label": label}


def build_schema(raw: dict[str, Any], header: list[str], rows: list[list[str]], source: str,
                 inferred: bool) -> TabularSchema:
    """The schema with its statistics: the schema's mean/std where given, else the data's (population std)."""
    continuous = [str(c) for c in raw.get("continuous", [])]
    categorical = [(str(k), tuple(str(c) for c in v)) for k, v in raw.get("categorical", {}).items()]
    label = str(raw["label"])
    wanted = [*continuous, *(n for n, _ in categorical), label]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{source}: column(s) {', '.join(missing)} named by the schema are missing from the "
                        f"header ({', '.join(header)}); fix the schema or the file")
    given_mean, given_std = raw.get("mean") or {}, raw.get("std") or {}
    mean, std, from_data = [], [], False
    for name in continuous:
        j = header.index(name)
        if name in given_mean and name in given_std:
            m, s = float(given_mean[name]), float(given_std[name])
        else:
            values = [_continuous(source, name, i, r[j]) for i, r in enumerate(rows)]
            m = sum(values) / len(values)
            s = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
            from_data = True
        if not (math.isfinite(m) and math.isfinite(s)):
            raise DataError(f"{source}: column {name}: mean/std {m}/{s} is not finite; fix the schema")
        mean.append(m)
        std.append(s if s > 0 else 1.0)  # a constant column: standardising would divide by zero
    classes = tuple(str(c) for c in raw.get("classes", ()))
    if not classes and label in dict(categorical):
        classes = dict(categorical)[label]
    return TabularSchema(tuple(continuous), tuple((n, c) for n, c in categorical if n != label), label,
                         tuple(mean), tuple(std), classes, inferred,
                         Path(source).name if from_data else "schema")


def _continuous(source: str, column: str, index: int, text: str) -> float:
    value = _number(text)
    if value is None or not math.isfinite(value):
        raise DataError(f"{source}: record {index + 1}, column {column}: {text!r} is not a finite number "
                        "(continuous column); fix the value or drop the record")
    return value


def parse_rows(schema: TabularSchema, header: list[str], rows: list[list[str]],
               source: str) -> tuple[list[tuple[Value, ...]], list[int]]:
    """Raw rows in ``schema.columns`` order, and the labels as class indices; one clear error per bad cell."""
    li = header.index(schema.label)
    return _features(schema, header, rows, source), [_label(schema, r[li], source, i) for i, r in enumerate(rows)]


def _features(schema: TabularSchema, header: list[str], rows: list[list[str]], source: str) -> list[tuple[Value, ...]]:
    missing = [c for c in schema.columns if c not in header]
    if missing:
        raise DataError(f"{source}: column(s) {', '.join(missing)} of the schema are missing from the header "
                        f"({', '.join(header)}); give records with those columns")
    index = [header.index(c) for c in schema.columns]
    nc = len(schema.continuous)
    cats = dict(schema.categorical)
    out = []
    for i, row in enumerate(rows):
        values: list[Value] = []
        for k, (name, j) in enumerate(zip(schema.columns, index, strict=True)):
            if k < nc:
                values.append(_continuous(source, name, i, row[j]))
            elif row[j] not in cats[name]:
                raise DataError(f"{source}: record {i + 1}, column {name}: category {row[j]!r} is not one of the "
                                f"schema's ({', '.join(cats[name])}); add it to the schema or fix the value")
            else:
                values.append(row[j])
        out.append(tuple(values))
    return out


def _label(schema: TabularSchema, text: str, source: str, index: int) -> int:
    if schema.classes:
        if text not in schema.classes:
            raise DataError(f"{source}: record {index + 1}, label {schema.label}: {text!r} is not one of the classes "
                            f"({', '.join(schema.classes)}); fix the value or the schema's classes")
        return schema.classes.index(text)
    value = _number(text)
    if value is None or value != int(value) or value < 0:
        raise DataError(f"{source}: record {index + 1}, label {schema.label}: {text!r} is not a class index; give "
                        "integer labels or the schema's \"classes\"")
    return int(value)


def load_records(path: str | Path, *, input_shape: tuple[int, ...], num_classes: int, schema: str | Path | None,
                 label_column: str | None = None) -> SampleBatch:
    """A CSV / .npz table as a tabular ``SampleBatch`` (``x`` = ``pixels`` = the encoded rows)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; point {argument_ref('data')} at a CSV with a header row")
    header, rows = read_table(p)
    if schema is not None:
        raw, inferred = load_schema(schema), False
    else:
        label = label_column or header[-1]
        if label not in header:
            raise DataError(f"{p}: {setting_ref('label_column')} {label} is not a column ({', '.join(header)}); "
                            "name one of them")
        classes = sorted({r[header.index(label)] for r in rows})
        raw = infer_schema(header, rows, label)
        if any(_number(c) is None for c in classes):
            raw["classes"] = classes
        inferred = True
    built = build_schema(raw, header, rows, str(p), inferred)
    values, labels = parse_rows(built, header, rows, str(p))
    width = int(math.prod(input_shape))
    if built.width != width or len(input_shape) != 1:
        shown = ", ".join(f"{n} ({len(c)} categories)" for n, c in built.categorical)
        raise DataError(f"{p}: the encoded record has {built.width} values but the model's input has {width} "
                        f"(shape {tuple(input_shape)}): continuous {', '.join(built.continuous) or 'none'}; "
                        f"categorical {shown or 'none'}; fix the schema (columns, categories) or the model")
    bad = [i for i, y in enumerate(labels) if y >= num_classes]
    if bad:
        raise DataError(f"{p}: record {bad[0] + 1} has class {labels[bad[0]]} but the model has {num_classes} "
                        "classes; fix the label or the schema's classes")
    x = built.encode(values)
    names = tuple(f"{p.name}[{i}]" for i in range(len(values)))
    return SampleBatch(x=x, y=torch.tensor(labels, dtype=torch.long), pixels=x.clone(), names=names, source=str(p),
                       normalization=Normalization("none", (0.0,), (1.0,)), modality="tabular",
                       records=TabularRecords(built, tuple(values), x.clone()))


def load_reference_records(path: str | Path, schema: TabularSchema) -> tuple[tuple[Value, ...], ...]:
    """``--reference-data`` records read with the scan's schema (its statistics stay the scan's)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; point {setting_ref('reference_data')} at a CSV with the scanned file's "
                        "columns")
    header, rows = read_table(p)
    return tuple(_features(schema, header, rows, str(p)))
