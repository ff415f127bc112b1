"""The Python API: audit() on the bundled examples returns typed results a caller can use without the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.audit import AuditResult, audit, audit_loaded
from leakaudit.config import ScanSettings
from leakaudit.progress import AttackProgress

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = EXAMPLES / "models" / "mlp_dropout.onnx"
SAMPLES = EXAMPLES / "samples"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="bundled examples not built (examples/build_examples.py)")


class Recorder:
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.events: list[AttackProgress] = []

    def stage(self, name: str, detail: str = "") -> None:
        self.stages.append(name)

    def attack_progress(self, event: AttackProgress) -> None:
        self.events.append(event)

    def should_stop(self) -> bool:
        return False


def test_audit_returns_typed_result_with_tensors_and_progress():
    rec = Recorder()
    result = audit(str(MODEL), str(SAMPLES), attacks=("analytic",), observer=rec)
    assert isinstance(result, AuditResult)
    assert result.model.format == "onnx" and result.model.input_shape == (3, 32, 32)
    assert len(result.findings.dropout) == 2
    analytic = result.attacks[0]
    assert analytic.status == "ran" and analytic.pixels.shape == (1, 3, 32, 32)
    assert analytic.samples[0].metrics["psnr"] > 40  # closed-form inversion of the first Linear layer
    assert result.leaked and result.exit_code == 1
    assert result.data.pixels.shape == (1, 3, 32, 32)
    # paths from Python: the command line that repeats the scan (tests/report/test_audit_module_api.py runs it)
    assert result.command.startswith("leakaudit scan ") and result.command_reason == ""
    assert rec.stages[:3] == ["load model", "detect", "load samples"] and rec.events[-1].attack == "analytic"


def test_audit_loaded_reuses_prepared_inputs():
    from leakaudit.data import load_samples, normalization
    from leakaudit.detect import detect
    from leakaudit.models.load import load_model

    model = load_model(MODEL)
    batch = load_samples(SAMPLES, input_shape=model.input_shape, num_classes=model.num_classes,
                         normalization=normalization("none", channels=3), limit=1)
    settings = ScanSettings(attacks=("analytic",), defenses=("noise:sigma=10",))
    before = {n: p.detach().clone() for n, p in model.module.named_parameters()}
    result = audit_loaded(model, batch, detect(model), settings)
    assert result.overall == "pass" and [d.name for d in result.threat.defenses] == ["noise"]
    assert all(torch.equal(before[n], p) for n, p in model.module.named_parameters())  # model untouched


def test_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="budjet"):
        audit(str(MODEL), str(SAMPLES), budjet="quick")


def test_prepare_then_run_is_the_audit_and_a_prepared_model_runs_again_under_other_settings():
    from leakaudit.audit import prepare, run

    prepared = prepare(str(MODEL), str(SAMPLES), attacks=("analytic",))
    assert prepared.settings.batch_size == 1 and len(prepared.batch) == 1
    first, direct = run(prepared), audit(str(MODEL), str(SAMPLES), attacks=("analytic",))
    assert first.overall == direct.overall == "fail"
    assert first.attacks[0].means == direct.attacks[0].means
    noisy = run(prepared, ScanSettings(attacks=("analytic",), defenses=("noise:sigma=0.1",)))
    assert [str(d) for d in noisy.threat.defenses] == ["noise:sigma=0.1"]
    assert noisy.attacks[0].means["ssim"] < first.attacks[0].means["ssim"]


def test_prepare_refuses_a_bad_setting_before_it_reads_the_model(tmp_path):
    from leakaudit.audit import prepare
    from leakaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="igg"):
        prepare(str(tmp_path / "missing.onnx"), str(SAMPLES), attacks=("igg",))
