"""Hand-built AuditResults for report tests (no attack runs: the report layer is tested on its own)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import torch

from leakaudit.audit import (AttackOutcome, AuditResult, DataCard, LabelOutcome, ModelCard, RuleOutcome,
                             SampleScore)
from leakaudit.config import ScanSettings
from leakaudit.data.interface import Normalization
from leakaudit.detect.interface import DropoutLayer, Findings
from leakaudit.update.interface import DefenseSpec, ThreatModel

XSS_SCRIPT = "<script>document.title='pwned'</script>"
XSS_IMG = "\"><img src=x onerror=\"document.title='pwned2'\">"


def make_result(*, leaked: bool = True, layer_name: str = "features.3", sample_name: str = "cat.png",
                incomplete: bool = False, not_evaluated: bool = True, batch: int = 2,
                seed: int = 7) -> AuditResult:
    gen = torch.Generator().manual_seed(seed)
    originals = torch.rand(batch, 3, 16, 16, generator=gen)
    recon = (originals + 0.05 * torch.randn(batch, 3, 16, 16, generator=gen)).clamp(0, 1)
    names = tuple(f"{i}-{sample_name}" for i in range(batch))
    ssim = 0.93 if leaked else 0.12
    samples = tuple(SampleScore(index=i, original_index=batch - 1 - i, name=names[batch - 1 - i],
                                metrics={"ssim": ssim, "psnr": float("inf") if i == 0 else 27.5, "mse": 0.002},
                                label_true=3, label_recovered=3) for i in range(batch))
    rules = [RuleOutcome("ssim-any", "ssim", ">=", 0.6, "fail", "any", "fail" if leaked else "pass",
                         observed=ssim, attack="dia", sample=names[0], reason="a recognisable reconstruction",
                         description="SSIM of any sample", rationale="why", reference="Wang et al. 2004"),
             RuleOutcome("labels", "label_accuracy", ">=", 1.0, "warn", "mean", "warn", observed=1.0, attack="dia")]
    if not_evaluated:
        rules.append(RuleOutcome("lpips-any", "lpips", "<=", 0.3, "fail", "any", "not_evaluated",
                                 reason="lpips unavailable: backbone weights not found offline"))
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return AuditResult(
        model=ModelCard(path=f"models/{layer_name}.onnx", sha256="a" * 64, format="onnx", input_shape=(3, 16, 16),
                        num_classes=10, num_trainable=1234, onnx_opset=18, onnx_producer="pytorch",
                        looks_eval_exported=False),
        findings=Findings(layers=((layer_name, "MaskableDropout", 0), ("fc", "Linear", 1234)),
                          dropout=(DropoutLayer(layer_name, 0.5, 0, "onnx"),),
                          warnings=(f"warning about {layer_name}",)),
        data=DataCard(source=f"samples/{sample_name}", count=batch, shape=(3, 16, 16),
                      normalization=Normalization("cifar10", (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
                      names=names, labels=(3,) * batch, pixels=originals),
        threat=ThreatModel(batch_size=batch, defenses=(DefenseSpec("noise", {"sigma": 0.01}),)),
        attacks=(
            AttackOutcome("dia", "ran", settings={"iterations": 20, "restarts": 1, "lr": 0.1, "tv": 1e-4},
                          device="cpu", seconds=1.5, iterations_planned=20, iterations_run=20, attack_loss=0.01,
                          samples=samples, means={"ssim": ssim, "psnr": 27.5}, unavailable={"lpips": "no weights"},
                          label_accuracy=1.0, pixels=recon),
            AttackOutcome("precode-aware", "skipped", reason="no variational bottleneck found"),
        ),
        rules=tuple(rules), rules_overall="fail" if leaked else "pass", rules_profile="default", strict=False,
        seed=0, device="cpu", started_at=started, finished_at=started + timedelta(seconds=12),
        label_recovery=LabelOutcome(known=False, strategy="idlg", labels=(3,) * batch, accuracy=1.0),
        settings=ScanSettings(budget="quick"), command="leakaudit scan m.onnx --data s --seed 0",
        incomplete=incomplete, incomplete_reason="interrupted by the user" if incomplete else "")
