"""Coverage (issue 10 item 1): `leakaudit scan` audits every sample given, batch by batch, and reports the
recognised fraction with its Clopper-Pearson interval.

A 64-image folder and an MLP whose first layer is Linear: the analytic attack inverts a single sample exactly,
so at batch 1 every sample is recognised; a heavy noise defense recognises none (and the control, on the
undefended updates, still reconstructs: the pass is earned). Attacks are the analytic one only: seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

import leakaudit
from leakaudit.cli import app_main
from leakaudit.coverage import checkpoint
from leakaudit.metrics.stats import clopper_pearson
from leakaudit.report import schema

SHAPE = (3, 8, 8)
N = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mlp_workdir) -> Path:
    return mlp_workdir(tmp_path_factory.mktemp("coverage"), N, SHAPE)


def scan(workdir: Path, out: Path, *extra: str, data: Path | None = None) -> int:
    return app_main(["scan", str(workdir / "mlp.safetensors"), "--data", str(data or workdir / "images"),
                     "--output-dir", str(out), "--quiet", "--attacks", "analytic", *extra])


def report(out: Path) -> dict:
    doc = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(doc)
    return doc


def _recognised(sample: dict) -> bool:
    """The default profile's fail-severity per-sample rules, recomputed from the reported scores: attributable
    (match_p <= 0.02, or nearest of all with fewer references) and structure score >= 0.1 or PSNR gain >= 1 dB."""
    m = sample["metrics"]
    if "match_p" not in m or sample["references"] is None:
        return False
    gain = math.inf if m.get("psnr_gain") == "inf" else m.get("psnr_gain", -math.inf)
    attributable = m["match_p"] <= max(0.02, 1 / (sample["references"] + 1)) + 1e-12
    return attributable and (m.get("ssim_skill", -math.inf) >= 0.1 or gain >= 1.0)


@pytest.mark.parametrize("batch", [1, 4])
def test_every_sample_audited_with_the_rate_and_its_interval(workdir, tmp_path, batch):
    out = tmp_path / "r"
    code = scan(workdir, out, "--batch-size", str(batch))
    doc = report(out)
    c = doc["coverage"]
    assert c["audited"] == c["planned"] == c["available"] == N and c["drawn"] == "all"
    assert c["batches_planned"] == c["batches_run"] == N // batch and c["batch_size"] == batch
    assert [s["index"] for s in c["samples"]] == list(range(N))
    assert sorted(s["name"] for s in c["samples"]) == [f"img{i:02d}.png" for i in range(N)]
    assert all(s["batch"] == s["index"] // batch and s["position"] == s["index"] % batch for s in c["samples"])
    k = sum(_recognised(s) for s in c["samples"])
    assert [s["recognised"] for s in c["samples"]] == [_recognised(s) for s in c["samples"]]
    assert c["recognised"] == k and c["fraction"] == pytest.approx(k / N)
    lo, hi = clopper_pearson(k, N)
    assert (c["interval"]["lower"], c["interval"]["upper"]) == pytest.approx((lo, hi))
    assert c["interval"]["method"] == "clopper-pearson"
    if batch == 1:  # analytic inverts one sample exactly: every one is recognised
        assert k == N and c["fraction"] == 1.0 and hi == 1.0 and lo == pytest.approx(0.025 ** (1 / N))
    assert code == (1 if k else 0) and doc["verdict"]["overall"] == ("fail" if k else "pass")
    assert sum(g["audited"] for g in c["by_position"]) == N and len(c["by_position"]) == batch
    assert {g["label"] for g in c["by_label"]} == {0, 1, 2, 3}
    # only the worst cases keep their images
    assert 0 < sum(1 for s in c["samples"] if s["reconstruction"]) <= 12
    assert c["worst"]["recognised"] == bool(k)


def test_heavy_noise_recognises_nothing_and_the_interval_says_how_sure(workdir, tmp_path):
    out = tmp_path / "r"
    code = scan(workdir, out, "--samples", "16", "--defense", "noise:sigma=10")
    doc = report(out)
    c = doc["coverage"]
    assert c["audited"] == 16 and c["drawn"] == f"16 of {N} drawn with seed 0"
    assert c["recognised"] == 0 and c["fraction"] == 0.0 and c["interval"]["lower"] == 0.0
    assert c["interval"]["upper"] == pytest.approx(1 - 0.025 ** (1 / 16))
    # every batch's own control reconstructed the undefended update: the pass is earned
    assert all(b["control_reconstructed"] is True for b in c["batches"])
    assert doc["verdict"]["overall"] == "pass" and code == 0


def test_samples_are_drawn_with_the_seed(workdir, tmp_path):
    names = []
    for seed, where in ((0, "a"), (0, "b"), (1, "c")):
        scan(workdir, tmp_path / where, "--samples", "8", "--seed", str(seed))
        names.append([s["name"] for s in report(tmp_path / where)["coverage"]["samples"]])
    assert names[0] == names[1] and len(set(names[0])) == 8 and names[0] != names[2]
    assert names[0] == sorted(names[0])  # kept in file order


def test_remainder_is_a_last_smaller_batch(workdir, tmp_path):
    out = tmp_path / "r"
    scan(workdir, out, "--samples", "10", "--batch-size", "4")
    c = report(out)["coverage"]
    assert [b["size"] for b in c["batches"]] == [4, 4, 2]
    assert "a last batch of 2" in c["remainder"] and c["audited"] == 10


def test_too_many_samples_is_one_line_exit_2(workdir, tmp_path, capsys):
    out = tmp_path / "r"
    assert scan(workdir, out, "--samples", str(N + 1)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"holds {N} sample(s)" in err and "--samples" in err
    assert not (out / "report.json").exists()


def test_a_remainder_batchnorm_cannot_train_at_is_refused_or_left_out_and_named(tmp_path):
    from leakaudit.audit import audit
    from leakaudit.data import SampleBatch, normalization
    from leakaudit.errors import DataError
    from leakaudit.models import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model = LoadedModel(net, (1, 4, 4), 3, Path("bn.safetensors"), "0" * 64, "safetensors", arch="bn")
    pixels = torch.rand(5, 1, 4, 4)
    batch = SampleBatch(pixels, torch.tensor([0, 1, 2, 0, 1]), pixels, tuple(f"s{i}" for i in range(5)), "mem",
                        normalization("none", channels=1))
    with pytest.raises(DataError, match="^samples 5 at batch size 2 leaves a last batch of 1, which the model "
                                        "cannot train at"):
        audit(model, batch, attacks=("analytic",), batch_size=2, samples=5)
    # every sample (the default): the remainder is left out, and the report says which
    result = audit(model, batch, attacks=("analytic",), batch_size=2)
    assert result.coverage is not None and result.coverage.audited == 4 and result.coverage.available == 5
    assert result.coverage.remainder.startswith("1 of 5 samples not audited (s4)")
    assert result.coverage.remainder in result.notes


def test_a_rule_on_the_rate(workdir, tmp_path):
    rules = tmp_path / "rate.toml"
    rules.write_text("""
[[rule]]
id = "recognisable"
metric = "ssim_adjusted"
threshold = 0.6
severity = "warn"

[[rule]]
id = "no-sample-recognised"
metric = "recognised_fraction"
comparison = ">"
threshold = 0.0

[[rule]]
id = "at-most-half"
metric = "recognised_upper"
threshold = 0.5
severity = "warn"
""")
    leak, safe = tmp_path / "leak", tmp_path / "safe"
    assert scan(workdir, leak, "--samples", "8", "--rules", str(rules)) == 1
    doc = report(leak)
    by_id = {r["id"]: r for r in doc["rules"]["results"]}
    # no fail-severity per-sample rule of its own: "recognised" is the default profile's criterion
    assert doc["coverage"]["criterion"] == ["recognised-structure", "recognised-pixels"]
    assert by_id["no-sample-recognised"]["status"] == "fail" and by_id["no-sample-recognised"]["observed"] == 1.0
    assert by_id["at-most-half"]["status"] == "warn"
    assert scan(workdir, safe, "--samples", "8", "--rules", str(rules), "--defense", "noise:sigma=10") in (0, 4)
    by_id = {r["id"]: r for r in report(safe)["rules"]["results"]}
    assert by_id["no-sample-recognised"]["status"] == "pass" and by_id["no-sample-recognised"]["observed"] == 0.0
    assert by_id["at-most-half"]["observed"] == pytest.approx(clopper_pearson(0, 8)[1])


def test_resume_continues_from_the_checkpoint(workdir, tmp_path, monkeypatch, interrupt_batch):
    import leakaudit.audit as audit_module

    full, out = tmp_path / "full", tmp_path / "r"
    assert scan(workdir, full, "--samples", "8", "--batch-size", "2") == 1
    real = interrupt_batch(3)
    assert scan(workdir, out, "--samples", "8", "--batch-size", "2") == 130
    saved = json.loads((out / "scan-checkpoint.json").read_text())
    assert [b["index"] for b in saved["batches"]] == [0, 1]
    calls: list[int] = []
    monkeypatch.setattr(audit_module, "audit_loaded", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert scan(workdir, out, "--samples", "8", "--batch-size", "2", "--resume") == 1
    resumed, whole = report(out)["coverage"], report(full)["coverage"]
    # batches 3 and 4 ran; a restored batch again only when it holds the worst sample (the report's detail)
    assert len(calls) == 2 + (resumed["shown_batch"] in (0, 1))
    assert resumed["resumed_batches"] == 2 and not (out / "scan-checkpoint.json").exists()
    strip = lambda c: [{k: v for k, v in s.items()} for s in c["samples"]]  # noqa: E731
    assert strip(resumed) == strip(whole)
    assert (resumed["recognised"], resumed["interval"]) == (whole["recognised"], whole["interval"])


def test_resume_refuses_another_scans_checkpoint(workdir, tmp_path, capsys):
    out = tmp_path / "r"
    (out).mkdir()
    (out / "scan-checkpoint.json").write_text(json.dumps({"kind": "leakaudit-scan-checkpoint",
                                                          "version": checkpoint.VERSION,
                                                          "leakaudit": leakaudit.__version__,
                                                          "model_sha256": "f" * 64}))
    assert scan(workdir, out, "--samples", "4", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another model" in err


def test_gallery_names_are_escaped(workdir, tmp_path):
    from PIL import Image

    folder = tmp_path / "evil"
    folder.mkdir()
    name = "<img src=x onerror=alert(1)>.png"
    for i, n in enumerate([name, "b.png"]):
        Image.fromarray((np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)).save(folder / n)
    (folder / "labels.csv").write_text(f"file,label\n\"{name}\",0\nb.png,1\n")
    out = tmp_path / "r"
    scan(workdir, out, data=folder)
    html = (out / "report.html").read_text()
    assert "Worst cases" in html and "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html


@pytest.mark.parametrize("value,message", [("0", "is below 1"), ("abc", "give N (e.g. 100) or all")])
def test_a_bad_samples_value_is_one_line_exit_2(workdir, tmp_path, capsys, value, message):
    assert scan(workdir, tmp_path / "r", "--samples", value) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count("--samples") >= 1 and message in err


def test_samples_all_is_every_sample_and_left_out_of_the_reproduce_command(workdir, tmp_path):
    out = tmp_path / "r"
    scan(workdir, out, "--samples", "all", "--batch-size", "16")
    doc = report(out)
    assert doc["coverage"]["audited"] == N and "--samples" not in doc["command"]
    scan(workdir, out, "--samples", "16", "--batch-size", "16")
    assert "--samples 16" in report(out)["command"]
