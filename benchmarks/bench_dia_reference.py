"""DIA against the DIA paper's own reference code, side by side (issue 8's first goal).

The reference implementation (Scheliga et al., AAAI 2023: github.com/dAI-SY-Group/DropoutInversionAttack) is
not part of leakaudit and is never copied into it: pass the path of your own checkout with
``--reference-dir``. Both sides attack the same client update setting:

- the model: the paper's MLP (``example_configs/models/MLP.yaml``: 784-512-512-512-10, GELU, no biases,
  dropout p=0.25 after each hidden layer), one set of random weights (seed 0) loaded into both;
- the image: one real 28x28 grey image (default ``digits``: scikit-learn's ``load_digits()`` digit 0, 8x8,
  upscaled to 20x20 and padded to 28x28 the way MNIST centres its digits; ``mnist``: the first of the
  128 real MNIST digits the reference ships in ``data/MNIST_128.tdump``), normalised with MNIST's mean/std;
- the attack: the reference's ``example_configs/attacks/DIA.yaml`` (Adam lr 0.1 on the sign of the image
  gradient, TV 1e-5, mask regulariser 1e-4, ReduceLROnPlateau x0.1 after 800, box clip, attacker without
  dropout) with ``--iterations`` x ``--restarts`` (``max_iterations`` / ``max_trials``); leakaudit runs
  ``leakaudit scan --attacks dia --budget thorough --iterations N --restarts R --labels-known
  --normalize mnist`` (thorough's DIA is the same settings: TV 1e-5, mask_reg 1e-4, plateau decay after
  800), labels known on both sides (the reference always gives its attack the true label).

The reference runs unmodified: a driver written by this benchmark into a temporary folder imports its
``src`` package, builds the model from its configs, loads the shared weights with ``load_state_dict``, feeds
the image through the reference's own victim-data format (a ``.tdump`` dict of normalised inputs and
targets, read by its ``load_victim_data``), and calls ``DropoutInversionAttack(...).attack()``. Its
dependencies: torch, numpy, pyyaml, munch, matplotlib, einops (imported by its ViT module).

Printed, per side: seconds inside the attack (reference: around its ``attack()`` call; leakaudit: the
report's ``seconds`` of the dia attack), seconds as a whole process (wall time of the subprocess, from
interpreter start to exit), SSIM and PSNR of the returned reconstruction against the image (both computed
here with ``leakaudit.metrics.functional`` on 8-bit images, since leakaudit's report stores its
reconstruction as a PNG; plus the report's own scores), and the ratios. The runs alternate
(reference, leakaudit, reference, ...) so a burst of load on a shared machine hits both about equally; the
fastest of ``--repeats`` is reported for the times, the scores of every run are listed.

Usage: python benchmarks/bench_dia_reference.py --reference-dir PATH [--iterations 300] [--restarts 4]
       [--repeats 3] [--threads 1] [--image digits|mnist] [--device cpu] [--keep DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.13066373765468597, 0.30810782313346863  # the reference's src/constants.yaml

ARCH = '''\
"""The DIA paper's MLP (reference ``src/models/mlp.py``: Linear -> GELU -> dropout per hidden block)."""
from torch import nn


def dia_mlp(num_classes: int = 10, input_shape=(1, 28, 28)) -> nn.Module:
    layers = [nn.Flatten()]
    width = 784
    for _ in range(3):
        layers += [nn.Linear(width, 512, bias=False), nn.GELU(), nn.Dropout(0.25)]
        width = 512
    return nn.Sequential(*layers, nn.Linear(512, num_classes, bias=False))
'''

# Runs in a fresh interpreter with the reference checkout first on sys.path; only its public entry points.
DRIVER = '''\
import json, sys, time
reference, work, iterations, restarts, seed, device = sys.argv[1:7]
sys.path.insert(0, reference)
import torch
from src.utils import build_config, set_seeds
from src.models import get_model
from src.data import load_victim_data
from src import attacks

set_seeds(int(seed))
inputs, targets, shape = load_victim_data(work + "/victim.tdump", 1)
model_config = build_config(reference + "/example_configs/models/MLP.yaml")
model_config.data_shape = shape
model_config.num_classes = 10
model = get_model(model_config.name, model_config)
model.load_state_dict(torch.load(work + "/reference_weights.pt"))
model = model.to(device)
config = build_config(reference + "/example_configs/attacks/DIA.yaml")
config.device = torch.device(device)
config.num_classes = 10
config.victim_batchsize = 1
config.max_iterations = int(iterations)
config.max_trials = int(restarts)
attacker = attacks.DropoutInversionAttack("MNIST", model, inputs, targets, config)
start = time.perf_counter()
recons, results = attacker.attack()
seconds = time.perf_counter() - start
torch.save(recons[0]["Reconstructions"], work + "/reference_reconstruction.pt")
print("BENCH " + json.dumps({"attack_seconds": seconds}))
'''


def _image(kind: str, reference: Path) -> tuple[torch.Tensor, int]:
    """One real grey image in [0, 1], shape (1, 1, 28, 28), and its label."""
    if kind == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        small = torch.tensor(digits.images[0], dtype=torch.float32)[None, None] / 16.0
        x = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
        x = torch.nn.functional.pad(x, (4, 4, 4, 4)).clamp(0, 1)
        return x, int(digits.target[0])
    if kind == "mnist":
        data = torch.load(reference / "data" / "MNIST_128.tdump")
        x = (data["inputs"][:1] * MNIST_STD + MNIST_MEAN).clamp(0, 1)
        return x, int(data["targets"][0])
    raise SystemExit(f"--image {kind}: use digits or mnist")


def _model() -> nn.Module:
    namespace: dict = {}
    exec(ARCH, namespace)  # the same factory leakaudit imports from arch.py
    torch.manual_seed(0)
    return namespace["dia_mlp"]()


def _reference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the reference MLP's names (layers.K.linear.weight)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return {f"layers.{k}.linear.weight": m.weight.detach().clone() for k, m in enumerate(linears)}


def _prepare(work: Path, kind: str, reference: Path) -> torch.Tensor:
    from safetensors.torch import save_file

    x, label = _image(kind, reference)
    model = _model()
    (work / "arch.py").write_text(ARCH)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / "model.safetensors"))
    torch.save(_reference_state(model), work / "reference_weights.pt")
    np.savez(work / "data.npz", x=x.numpy(), y=np.array([label]))
    torch.save({"inputs": (x - MNIST_MEAN) / MNIST_STD, "targets": torch.tensor([label])}, work / "victim.tdump")
    (work / "driver.py").write_text(DRIVER)
    return x


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], cwd: Path, threads: int, log: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode not in (0, 1):  # leakaudit exits 1 when it finds the leak
        raise SystemExit(f"{cmd[0]} {cmd[1]} exited {proc.returncode}; its output is in {log}:\n"
                         + (proc.stdout + proc.stderr)[-3000:])
    return wall, proc.stdout


def _reference(work: Path, reference: Path, args: argparse.Namespace, i: int) -> dict:
    wall, out = _run([sys.executable, str(work / "driver.py"), str(reference), str(work), str(args.iterations),
                      str(args.restarts), str(args.seed), args.device], reference, args.threads,
                     work / f"reference_{i}.log")
    line = next(s for s in out.splitlines() if s.startswith("BENCH "))
    rec = torch.load(work / "reference_reconstruction.pt")
    pixels = (rec * MNIST_STD + MNIST_MEAN).clamp(0, 1)
    return {"attack": json.loads(line[6:])["attack_seconds"], "process": wall, "pixels": pixels}


def _leakaudit_cmd() -> list[str]:
    """The ``leakaudit`` console script installed with this interpreter (what a user runs), else its entry
    point run by the interpreter (a wrapper such as a pyenv shim would add its own start-up to the figure)."""
    script = Path(sys.executable).parent / "leakaudit"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from leakaudit.cli import main; sys.exit(main())"]


def _leakaudit(work: Path, args: argparse.Namespace, i: int) -> dict:
    out_dir = work / f"scan_{i}"
    cmd = [*_leakaudit_cmd(), "scan", str(work / "model.safetensors"), "--arch",
           f"{work / 'arch.py'}:dia_mlp", "--input-shape", "1,28,28", "--num-classes", "10", "--data",
           str(work / "data.npz"), "--normalize", "mnist", "--attacks", "dia", "--budget", "thorough",
           "--iterations", str(args.iterations), "--restarts", str(args.restarts), "--labels-known",
           "--seed", str(args.seed), "--device", args.device, "--format", "json", "--output-dir", str(out_dir),
           "--exit-zero"]
    wall, _ = _run(cmd, Path.cwd(), args.threads, work / f"leakaudit_{i}.log")
    doc = json.loads((out_dir / "report.json").read_text())
    return {"process": wall, **_dia_outcome(doc)}


def _find(node: object, pred) -> list:
    """Every dict in a JSON tree for which ``pred`` holds."""
    found: list = []
    if isinstance(node, dict):
        if pred(node):
            found.append(node)
        for v in node.values():
            found += _find(v, pred)
    elif isinstance(node, list):
        for v in node:
            found += _find(v, pred)
    return found


def _dia_outcome(doc: dict) -> dict:
    from PIL import Image

    runs = _find(doc, lambda d: d.get("name") == "dia" and "seconds" in d and not d.get("control"))
    if not runs:
        raise SystemExit("the scan's report has no dia attack outcome; see the leakaudit log")
    run = runs[0]
    images = _find(run, lambda d: isinstance(d.get("reconstruction"), str))
    uri = images[0]["reconstruction"]
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L")
    pixels = torch.tensor(np.asarray(png), dtype=torch.float32)[None, None] / 255.0
    metrics = run.get("means", {})
    return {"attack": float(run["seconds"]), "pixels": pixels,
            "report": {k: metrics.get(k) for k in ("ssim", "psnr") if k in metrics}}


def _scores(pixels: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    from leakaudit.metrics.functional import psnr, ssim

    q = lambda t: torch.round(t.clamp(0, 1) * 255.0) / 255.0  # noqa: E731 -- both sides as 8-bit images
    return float(ssim(q(pixels), q(x))[0]), float(psnr(q(pixels), q(x))[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference-dir", required=True, type=Path, help="your checkout of the DIA reference code")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image", default="digits", help="digits (scikit-learn) or mnist (the reference's data)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep the work files (models, logs, reports) in this folder")
    args = ap.parse_args(argv)
    reference = args.reference_dir.resolve()
    if not (reference / "src" / "attacks.py").is_file():
        raise SystemExit(f"--reference-dir {reference}: no src/attacks.py; give a checkout of "
                         "dAI-SY-Group/DropoutInversionAttack")
    with tempfile.TemporaryDirectory(prefix="bench_dia_") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        x = _prepare(work, args.image, reference)
        print(f"DIA {args.iterations} it x {args.restarts} restarts, the DIA paper's MLP (784-512-512-512, p=0.25), "
              f"image {args.image} (1x28x28), device {args.device}, {args.threads} thread(s); "
              f"fastest of {args.repeats}, alternated; load average {os.getloadavg()[0]:.2f}", flush=True)
        ref_runs, la_runs = [], []
        for i in range(args.repeats):
            ref_runs.append(_reference(work, reference, args, i))
            la_runs.append(_leakaudit(work, args, i))
            r, la = ref_runs[-1], la_runs[-1]
            print(f"  run {i + 1}: reference attack {r['attack']:.2f} s, process {r['process']:.2f} s; "
                  f"leakaudit attack {la['attack']:.2f} s, process {la['process']:.2f} s; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        print(f"{'':<10} {'attack s':>9} {'process s':>10} {'ssim':>7} {'psnr':>6}   ssim of every run")
        best = {}
        for name, runs in (("reference", ref_runs), ("leakaudit", la_runs)):
            scores = [_scores(r["pixels"], x) for r in runs]
            best[name] = (min(r["attack"] for r in runs), min(r["process"] for r in runs))
            every = " ".join(f"{s:.4f}" for s, _ in scores)
            print(f"{name:<10} {best[name][0]:9.2f} {best[name][1]:10.2f} {scores[0][0]:7.4f} {scores[0][1]:6.1f}"
                  f"   {every}")
        print(f"leakaudit's report (first run): {la_runs[0]['report']}")
        (ra, rp), (la_a, la_p) = best["reference"], best["leakaudit"]
        print(f"ratio reference / leakaudit: attack {ra / la_a:.1f}x, whole process {rp / la_p:.1f}x; "
              f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
