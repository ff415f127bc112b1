"""Tabular records: what trivial outputs score under the record metrics, and what the attacks recover.

``--trivial``: for every record of the bundled patient table (``examples/records/patients.csv``, its
63 other records plus the 64 of ``references.csv`` as references, K = 127), scores outputs that carry no
information about the record -- the references' mode/mean record, a random reference record, uniform noise
(continuous values uniform over +-2 standard deviations, a uniformly drawn category per group) -- and outputs
that do (the record with its continuous values moved by N(0, 0.05) standard deviations, with one / two
categorical features changed). Prints per output the mean record_match, record_skill and the fraction
recognised (match_p <= 0.02 and record_skill >= the threshold) at several thresholds, and per tolerance the
fraction of continuous features a random reference record / the mean record lands within.

Default: the attacks on the bundled model (``examples/models/tabular_mlp.onnx``) -- undefended, with dropout
(p 0.3 declared after the hidden ReLU) and with a weak and a strong noise defense -- at batch 1 and 8 (one
client batch of the first records drawn with the seed), each row what the attack recovered (record_match,
categorical / continuous, recognised) and its time, and the scan's verdict.

    python3 benchmarks/bench_tabular.py --trivial
    python3 benchmarks/bench_tabular.py              # the attack table of docs/tabular.md
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "records"
MODEL = ROOT / "examples" / "models" / "tabular_mlp.onnx"
THRESHOLDS = (0.0, 0.25, 0.5, 0.75)
TOLERANCES = (0.05, 0.1, 0.25, 0.5)


def _table() -> tuple[object, torch.Tensor]:
    from leakaudit.data.tabular import load_records, load_reference_records

    batch = load_records(DATA / "patients.csv", input_shape=(21,), num_classes=2, schema=DATA / "schema.json")
    refs = batch.records.schema.encode(load_reference_records(DATA / "references.csv", batch.records.schema))
    return batch, refs


def trivial(seed: int) -> None:
    from leakaudit.data import tabular as tab
    from leakaudit.metrics.tabular import baseline_record, score_records

    batch, refs = _table()
    schema = batch.records.schema  # type: ignore[attr-defined]
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    spans = schema.spans()
    conts = [s for k, (s, _) in enumerate(spans) if not schema.is_categorical(k)]

    def noise() -> torch.Tensor:
        out = torch.zeros(schema.width)
        for k, (s, e) in enumerate(spans):
            if schema.is_categorical(k):
                out[s + int(torch.randint(e - s, (1,), generator=gen))] = 1.0
            else:
                out[s] = float(torch.rand(1, generator=gen)) * 4 - 2
        return out

    def change(x: torch.Tensor, n: int) -> torch.Tensor:
        out = x.clone()
        for k in rng.sample([k for k in range(len(spans)) if schema.is_categorical(k)], n):
            s, e = spans[k]
            now = int(out[s:e].argmax())
            out[s:e] = 0.0
            out[s + rng.choice([c for c in range(e - s) if c != now])] = 1.0
        return out

    def jitter(x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[conts] += 0.05 * torch.randn(len(conts), generator=gen)
        return out

    n = len(batch)  # type: ignore[arg-type]
    pool = torch.cat([refs, batch.x])  # type: ignore[attr-defined]
    outputs = {
        "mode/mean record": lambda i: baseline_record(schema, torch.cat([refs, batch.x[torch.arange(n) != i]])),
        "random reference record": lambda i: refs[rng.randrange(len(refs))],
        "uniform noise": lambda i: noise(),
        "record, continuous +-N(0, 0.05 sd)": lambda i: jitter(batch.x[i]),
        "record, 1 categorical changed": lambda i: change(batch.x[i], 1),
        "record, 2 categorical changed": lambda i: change(batch.x[i], 2),
        "record, 2 categorical changed + N(0, 0.05 sd)": lambda i: jitter(change(batch.x[i], 2)),
    }
    print(f"{n} records, K = {len(pool) - 1} references each (63 other records + 64 of references.csv)")
    print(f"{'output':46s} {'record_match':>12s} {'skill':>7s} {'max':>6s} "
          + " ".join(f"rec@{t:<4g}" for t in THRESHOLDS))
    for name, make in outputs.items():
        match, skill, hits = [], [], {t: 0 for t in THRESHOLDS}
        for i in range(n):
            one = batch.select([i])  # type: ignore[attr-defined]
            sc = score_records(make(i)[None, :], one, references=pool)
            m = sc.samples[0].metrics
            match.append(m["record_match"])
            skill.append(m["record_skill"])
            for t in THRESHOLDS:
                hits[t] += int(m["match_p"] <= 0.02 and m["record_skill"] >= t)
        print(f"{name:46s} {sum(match) / n:12.3f} {sum(skill) / n:7.3f} {max(skill):6.3f} "
              + " ".join(f"{hits[t] / n:8.3f}" for t in THRESHOLDS))
    print("\ncontinuous features within the tolerance (fraction over records and columns):")
    mean = baseline_record(schema, refs)
    for tol in TOLERANCES:
        rand = torch.stack([refs[rng.randrange(len(refs))] for _ in range(n)])
        near = (rand[:, conts] - batch.x[:, conts]).abs() <= tol  # type: ignore[attr-defined]
        at_mean = (mean[conts][None, :] - batch.x[:, conts]).abs() <= tol  # type: ignore[attr-defined]
        print(f"  tolerance {tol:<4g} sd: random reference record {near.float().mean():.3f}, mean record "
              f"{at_mean.float().mean():.3f}")
    print(f"(the scan uses {tab.TOLERANCE:g} sd)")


def attacks(seed: int, budget: str) -> None:
    from leakaudit.audit import audit
    from leakaudit.config import ScanSettings

    cases = [("undefended", ()), ("dropout p 0.3", ()), ("noise sigma 0.001", ("noise:sigma=0.001",)),
             ("noise sigma 0.1", ("noise:sigma=0.1",))]
    print(f"{'case':22s} {'batch':>5s} {'attack':9s} {'record_match':>12s} {'categ.':>7s} {'contin.':>7s} "
          f"{'recognised':>10s} {'seconds':>8s}  verdict")
    for batch in (1, 8):
        for label, defenses in cases:
            # declared after the hidden ReLU (the export has no Dropout node): the client's masks are random
            extra = {"dropout": {"node_relu": 0.3}} if label.startswith("dropout") else {}
            settings = ScanSettings(schema=str(DATA / "schema.json"), batch_size=batch, samples=batch, seed=seed,
                                    budget=budget, defenses=defenses, no_dropout=not extra, all_attacks=True,
                                    attacks=("analytic", "tableak"), **extra)
            start = time.perf_counter()
            result = audit(str(MODEL), str(DATA / "patients.csv"), settings)
            total = time.perf_counter() - start
            for a in result.attacks:
                if not a.ran:
                    print(f"{label:22s} {batch:5d} {a.name:9s} skipped: {a.reason[:60]}")
                    continue
                m = a.means
                rec = sum(1 for s in a.samples if s.metrics.get("match_p", 1) <= 0.02
                          and s.metrics.get("record_skill", 0) >= 0.5)
                print(f"{label:22s} {batch:5d} {a.name:9s} {m.get('record_match', float('nan')):12.3f} "
                      f"{m.get('categorical_match', float('nan')):7.3f} {m.get('continuous_match', float('nan')):7.3f} "
                      f"{rec:>5d} of {len(a.samples):<2d} {a.seconds or 0:8.1f}  {result.overall}")
            print(f"{'':22s} {'':5s} (scan {total:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial", action="store_true", help="score trivial and recognisable outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", default="quick")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.trivial:
        trivial(args.seed)
    else:
        attacks(args.seed, args.budget)


if __name__ == "__main__":
    main()
