"""``leakaudit sweep`` end to end with the audit replaced by a synthetic one (SSIM falls as noise grows):
files, exit codes, Ctrl-C (incomplete, 130) then --resume, a failing value, and option errors."""

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import torch

from leakaudit import audit as audit_module
from leakaudit.cli import app_main
from leakaudit.data.interface import Normalization, SampleBatch
from leakaudit.detect.interface import Findings
from leakaudit.models import LoadedModel, create_model
from leakaudit.sweep import jsonio, pipeline
from leakaudit.update import parse_defense

SHA = "12" * 32
RULE_THRESHOLD = 0.5


def sigma_of(settings) -> float:
    for text in settings.defenses:
        spec = parse_defense(text)
        if spec.name == "noise":
            return spec.params["sigma"]
    return 0.0


def fake_result(settings, ssim: float) -> audit_module.AuditResult:
    now = datetime.now(timezone.utc)
    samples = tuple(audit_module.SampleScore(i, i, f"s{i}", {"ssim": ssim - 0.1 * i, "psnr": 10 + 20 * ssim})
                    for i in range(2))
    attack = audit_module.AttackOutcome("ig", "ran", samples=samples, seconds=0.01, iterations_run=20,
                                        attack_loss=0.2, unavailable={"lpips": "no local weights"},
                                        pixels=torch.rand(2, 3, 8, 8))
    skipped = audit_module.AttackOutcome("dia", "skipped", reason="no dropout layer found")
    leaked = ssim >= RULE_THRESHOLD
    rule = audit_module.RuleOutcome("ssim-any", "ssim", ">=", RULE_THRESHOLD, "fail", "any",
                                    "fail" if leaked else "pass", observed=ssim, attack="ig")
    norm = Normalization("none", (0.0,), (1.0,))
    return audit_module.AuditResult(
        model=audit_module.ModelCard("m.safetensors", SHA, "safetensors", (3, 8, 8), 10, 1, "mlp"),
        findings=Findings(layers=()),
        data=audit_module.DataCard("d.npz", 2, (3, 8, 8), norm, ("a", "b"), (1, 2)),
        threat=audit_module.ThreatModel(), attacks=(attack, skipped), rules=(rule,),
        rules_overall="fail" if leaked else "pass", rules_profile="default", strict=False, seed=settings.seed,
        device="cpu", started_at=now, finished_at=now, settings=settings)


class FakeAudit:
    """SSIM = 1 - 8 sigma: passes (SSIM < 0.5) from sigma 0.0625 on."""

    def __init__(self, fail_at=None, stop_after=None):
        self.calls, self.fail_at, self.stop_after = [], fail_at, stop_after

    def __call__(self, model, batch, findings, settings, observer):
        sigma = sigma_of(settings)
        self.calls.append(sigma)
        if sigma == self.fail_at:
            raise RuntimeError("simulated crash")
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            observer.request_stop()  # what the first Ctrl-C does
        return fake_result(settings, max(0.0, 1.0 - 8 * sigma))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    torch.manual_seed(0)
    module = create_model("mlp", num_classes=10, input_shape=(3, 8, 8))
    model = LoadedModel(module, (3, 8, 8), 10, tmp_path / "m.safetensors", SHA, "safetensors", arch="mlp")
    pixels = torch.rand(2, 3, 8, 8)
    batch = SampleBatch(pixels, torch.tensor([1, 2]), pixels, ("a<b>.png", "c.png"), "d.npz",
                        Normalization("none", (0.0,), (1.0,)))
    prepared = pipeline.Prepared(model, batch, Findings(layers=()), ruleset=None)
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: prepared)
    holder = {"audit": FakeAudit()}
    monkeypatch.setattr(pipeline, "default_audit", lambda prepared, command="": holder["audit"])
    monkeypatch.chdir(tmp_path)
    return holder


ARGS = ["sweep", "m.safetensors", "--arch", "mlp", "--data", "d.npz", "--vary", "noise.sigma=0.01,0.05,0.08,0.1",
        "--output-dir", "out", "--iterations", "20"]


def load(path="out/sweep.json"):
    doc = json.loads(Path(path).read_text())
    jsonschema.validate(doc, jsonio.schema())
    return doc


def test_sweep_writes_json_and_html_and_finds_threshold(fake, capsys):
    assert app_main(ARGS) == 0
    doc = load()
    assert doc["threshold"]["stable"] == 0.08
    assert [p["passed"] for p in doc["points"]] == [False, False, True, True]
    assert not doc["incomplete"]
    assert doc["command"].startswith("leakaudit sweep m.safetensors --data d.npz")
    assert "--vary noise.sigma=0.01,0.05,0.08,0.1" in doc["command"]
    assert "dia skipped: no dropout layer found" in doc["points"][0]["notes"]
    lpips = next(m for m in doc["points"][0]["attacks"][0]["metrics"] if m["name"] == "lpips")
    assert lpips["unavailable"] == "no local weights" and lpips["mean"] is None
    html = Path("out/sweep.html").read_text()
    assert "<figure><img" in html and "a&lt;b&gt;" not in html  # originals are images, names not leaked raw
    err = capsys.readouterr().err
    assert "threshold: noise.sigma=0.08 is the weakest tested setting" in err


def test_no_passing_value_exits_1_or_0_with_exit_zero(fake):
    args = [a if not a.startswith("noise.sigma=") else "noise.sigma=0.001,0.01" for a in ARGS]
    assert app_main(args) == 1
    assert load()["threshold"]["stable"] is None
    assert app_main(args + ["--exit-zero"]) == 0


def test_failing_value_keeps_others(fake):
    fake["audit"] = FakeAudit(fail_at=0.05)
    assert app_main(ARGS) == 0
    points = {p["value"]: p for p in load()["points"]}
    assert points[0.05]["status"] == "error"
    assert points[0.05]["error"] == "RuntimeError: simulated crash"
    assert points[0.05]["error_kind"] == "internal"
    assert all(points[v]["status"] == "done" for v in (0.01, 0.08, 0.1))


def test_ctrl_c_then_resume(fake):
    fake["audit"] = FakeAudit(stop_after=2)
    assert app_main(ARGS) == 130
    doc = load()
    assert doc["incomplete"] is True
    assert [p["value"] for p in doc["points"]] == [0.01, 0.05]
    fake["audit"] = FakeAudit()
    assert app_main(ARGS + ["--resume", "out/sweep.json"]) == 0
    assert fake["audit"].calls == [0.08, 0.1]  # the done values were not run again
    doc = load()
    assert not doc["incomplete"] and len(doc["points"]) == 4
    # --vary may be left out: it comes from the file
    fake["audit"] = FakeAudit()
    no_vary = [a for a in ARGS if a not in ("--vary", "noise.sigma=0.01,0.05,0.08,0.1")]
    assert app_main(no_vary + ["--resume", "out/sweep.json"]) == 0
    assert fake["audit"].calls == []


def test_resume_with_other_settings_is_refused(fake, capsys):
    assert app_main(ARGS) == 0
    assert app_main(ARGS + ["--seed", "3", "--resume", "out/sweep.json"]) == 2
    assert "settings differ from that run: seed (0 -> 3)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--vary", "noise.sgma=0.1,0.2"], "did you mean noise.sigma?"),
    (["--vary", "noise.sigma=0:1:log:3"], "a log range needs positive ends"),
    (["--vary", "ppp.sigma=0.1,0.2"], "has no PRECODE (variational) bottleneck"),
    (["--vary", "clip.norm=1,2", "--format", "junit"], "a sweep writes json and html only"),
])
def test_option_errors_exit_2(fake, capsys, extra, message):
    base = [a for a in ARGS if a not in ("--vary", "noise.sigma=0.01,0.05,0.08,0.1")]
    assert app_main(base + extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_vary_without_resume(fake, capsys):
    base = [a for a in ARGS if a not in ("--vary", "noise.sigma=0.01,0.05,0.08,0.1")]
    assert app_main(base) == 2
    assert "--vary: missing" in capsys.readouterr().err


def test_dropout_knob_rebuilds_model_and_redetects(fake):
    seen = []

    def audit(model, batch, findings, settings, observer):
        seen.append((model.module, [d.p for d in findings.dropout]))
        return fake_result(settings, 0.9)

    fake["audit"] = audit
    base = [a for a in ARGS if a not in ("--vary", "noise.sigma=0.01,0.05,0.08,0.1")]
    assert app_main(base + ["--vary", "dropout.p=0,0.5"]) == 1  # SSIM 0.9 everywhere: nothing passes
    (m0, rates0), (m5, rates5) = seen
    assert rates0 == [] and rates5 and all(p == 0.5 for p in rates5)
    w0 = dict(m0.named_parameters())
    assert all(torch.equal(w0[n], t) for n, t in m5.named_parameters())
    assert "model rebuilt as mlp with dropout p=0.5" in load()["points"][1]["notes"]


def test_dropout_knob_with_mismatching_weights_is_one_error(fake, monkeypatch, capsys):
    module = create_model("mlp", num_classes=10, input_shape=(3, 8, 8), hidden=(16,))  # not the zoo default
    prepared = pipeline.prepare()
    odd = pipeline.Prepared(LoadedModel(module, (3, 8, 8), 10, Path("m.safetensors"), SHA, "safetensors", arch="mlp"),
                            prepared.batch, prepared.findings)
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: odd)
    base = [a for a in ARGS if a not in ("--vary", "noise.sigma=0.01,0.05,0.08,0.1")]
    assert app_main(base + ["--vary", "dropout.p=0,0.5"]) == 2
    assert "does not reproduce the weights" in capsys.readouterr().err
    assert fake["audit"].calls == []
    assert not Path("out/sweep.json").exists()


def test_config_file_formats_for_scan_do_not_break_sweep(fake, tmp_path):
    (tmp_path / "leakaudit.toml").write_text('format = "json,html,junit"\n')
    assert app_main(ARGS) == 0
    assert Path("out/sweep.json").exists() and Path("out/sweep.html").exists()


def test_sweep_names_the_settings_a_config_file_gave(fake, tmp_path, capsys):
    (tmp_path / "leakaudit.toml").write_text('budget = "quick"\n')
    assert app_main(ARGS) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("settings from leakaudit.toml (flags win): --budget quick")
    assert app_main(ARGS + ["--quiet"]) == 0
    assert "settings from" not in capsys.readouterr().err


def test_without_matplotlib_the_html_sweep_is_one_error_before_any_audit(fake, monkeypatch, capsys):
    """matplotlib is the optional ``sweep`` extra: without it a sweep asked for its HTML stops at once (exit 2,
    one line naming the extra and --format json); --format json still runs."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a machine without it gives find_spec / import
    assert app_main(ARGS) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "matplotlib, which is not installed; pip install 'leakaudit[sweep]'" in err and "--format json" in err
    assert fake["audit"].calls == [] and not Path("out/sweep.json").exists()
    assert app_main(ARGS + ["--format", "json"]) in (0, 1)
    assert Path("out/sweep.json").exists() and not Path("out/sweep.html").exists()
