"""Trained models in the evidence (issue 24 item 5): FL servers attack trained global models, but the other
benchmarks audit random init. Does a few epochs of training change what the attacks recover?

Each model (the zoo's ``cnn`` and ``mlp``, Flower's quickstart CNN, the zoo's ``flower``) is trained
briefly on scikit-learn's ``load_digits`` (8x8 grey, bilinearly upsampled to 32x32 and repeated to 3 channels,
so that every model takes the same samples; pixels in [0, 1], no normalisation), on CPU. Its accuracy is
measured on the held-out digits (a stratified 20% split, seed 0). Then the same model at random init (the same
seed, before training) and trained is audited with ``leakaudit.audit`` on the same 6 held-out digits (the
first of each class 0-5), batch 1, labels recovered as a scan does.

Recognition references (``reference_data``): the other held-out digits, written to a .npz in a temporary
folder. Digits are not natural photos, so the bundled natural references would be easy to beat; among other
digits, same-class ones included, a reconstruction must resemble its own digit more than every other.

``--dataset faces`` does the same on scikit-image's ``lfw_subset`` (100 faces and 100 non-faces, 25x25 grey,
upsampled the same way; label 1 = face; 40 epochs on the 160 training images; the first three held-out faces
and three non-faces are audited; the models keep their 10-way head). Its 34 other held-out images are too few
references for match_p <= 0.02, so the training images are references too.

Models with BatchNorm (torchvision's ``resnet18`` and ``mobilenet_v3_small``, random init from torchvision,
10 classes, dropout off; ``--models resnet18,mobilenet_v3_small``) are audited twice per weights: with the
client's BatchNorm in train mode at batch 2 (three batches of two; the smallest batch their 1x1 maps train at)
and in eval mode (``client_batchnorm="eval"``, frozen running statistics) at batch 1.

Usage: python benchmarks/bench_trained.py [--dataset digits|faces] [--budget standard]
       [--models cnn,mlp,flower_cnn] [--epochs N]
       python benchmarks/bench_trained.py --models resnet18,mobilenet_v3_small --epochs 3 --budget quick \
           --max-time 600
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SHAPE = (3, 32, 32)


def _zoo(name: str) -> nn.Module:
    from leakaudit.models import create_model

    return create_model(name, num_classes=10, input_shape=SHAPE)


def _torchvision(name: str) -> nn.Module:
    import torchvision

    extra = {"dropout": 0.0} if name.startswith("mobilenet") else {}  # undefended, as the other rows
    return getattr(torchvision.models, name)(weights=None, num_classes=10, **extra)


MODELS = {"cnn": lambda: _zoo("cnn"), "mlp": lambda: _zoo("mlp"), "flower_cnn": lambda: _zoo("flower"),
          "resnet18": lambda: _torchvision("resnet18"),
          "mobilenet_v3_small": lambda: _torchvision("mobilenet_v3_small")}
# (client BatchNorm, batch size) of each audit: models with BatchNorm in both modes, the others once
BATCHNORM_AUDITS = (("train", 2), ("eval", 1))


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def dataset(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        grey = data.images.astype(np.float32) / 16.0  # (N, 8, 8), 0..16 -> [0, 1]
        target = data.target
    else:  # scikit-image's LFW subset: 100 faces then 100 non-faces, 25x25 in [0, 1]; label 1 = face
        from skimage.data import lfw_subset

        grey = lfw_subset().astype(np.float32)
        target = np.array([1] * 100 + [0] * 100)
    x = torch.from_numpy(grey).unsqueeze(1)
    x = F.interpolate(x, size=SHAPE[1:], mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    y = torch.from_numpy(target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=target, random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def audited_indices(y: torch.Tensor, name: str) -> list[int]:
    """Six held-out samples: the first of each digit 0-5, or the first three faces and three non-faces."""
    if name == "digits":
        return [int((y == c).nonzero()[0]) for c in range(6)]
    return [int(i) for c in (1, 0) for i in (y == c).nonzero()[:3, 0]]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return correct


def audit_row(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, refs: Path,
              args: argparse.Namespace, batchnorm: str = "train", batch_size: int = 1) -> dict:
    from leakaudit.audit import audit

    start = time.perf_counter()
    result = audit(model, (images, labels), budget=args.budget, batch_size=batch_size, reference_data=str(refs),
                   threads=1, seed=0, client_batchnorm=batchnorm, max_time=args.max_time)
    seconds = time.perf_counter() - start
    samples = result.coverage.samples if result.coverage else ()
    attacks = Counter(s.attack for s in samples if s.attack)
    skills = [s.metrics.get("ssim_skill", float("nan")) for s in samples]
    ps = [s.metrics.get("match_p", float("nan")) for s in samples]
    return {"verdict": result.overall, "recognised": sum(s.recognised for s in samples), "audited": len(samples),
            "attack": "/".join(f"{a} ({n})" for a, n in attacks.most_common()) or "-",
            "skill": statistics.median(skills) if skills else float("nan"),
            "p": statistics.median(ps) if ps else float("nan"), "seconds": seconds,
            "interval": result.coverage.interval if result.coverage else (float("nan"), float("nan")),
            "references": max((s.references or 0 for s in samples), default=0),
            "per_sample": [(s.label, s.attack, s.metrics.get("ssim_skill"), s.metrics.get("match_p"), s.recognised)
                           for s in samples]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="standard", choices=("quick", "standard", "thorough"))
    parser.add_argument("--models", default="cnn,mlp,flower_cnn",
                        help=f"comma-separated, of {', '.join(MODELS)} (default: the three without BatchNorm)")
    parser.add_argument("--dataset", default="digits", choices=("digits", "faces"),
                        help="scikit-learn's digits (10 classes) or scikit-image's LFW subset (face / not a face; "
                        "the models keep their 10-way head)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: 8 on digits, 40 on the 160 faces)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time", type=float, help="each audit's time cap in seconds (default: the budget's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the 2-core machine is shared: one thread, as OMP_NUM_THREADS=1

    epochs = args.epochs or (8 if args.dataset == "digits" else 40)
    x_train, y_train, x_test, y_test = dataset(args.dataset)
    audited = audited_indices(y_test, args.dataset)
    rest = [i for i in range(len(y_test)) if i not in audited]
    images, labels = x_test[audited], y_test[audited]
    ref_x, ref_y, ref_kind = x_test[rest], y_test[rest], "held-out"
    if len(rest) < 49:  # below 49 references p <= 0.02 is out of reach (docs/recognition.md): add the training ones
        ref_x, ref_y, ref_kind = torch.cat([ref_x, x_train]), torch.cat([ref_y, y_train]), "held-out and training"
    print(f"{args.dataset}: {len(y_train)} train, {len(y_test)} held out; audited: held-out samples of labels "
          f"{labels.tolist()}, references: the {len(ref_y)} other {ref_kind} samples", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        refs = Path(folder) / "references.npz"
        np.savez(refs, x=ref_x.numpy(), y=ref_y.numpy())
        for name in args.models.split(","):
            torch.manual_seed(args.seed)
            model = MODELS[name]()
            initial = copy.deepcopy(model)
            random_acc = accuracy(model, x_test, y_test)
            train_s = train(model, x_train, y_train, epochs, args.seed)
            acc = accuracy(model, x_test, y_test)
            print(f"{name}: trained {epochs} epochs in {train_s:.0f} s: held-out accuracy {acc:.1%} "
                  f"(random init {random_acc:.1%})", flush=True)
            modes = BATCHNORM_AUDITS if _has_batchnorm(model) else (("train", 1),)
            for (weights, net, a), (batchnorm, size) in itertools.product(
                    (("random", initial, random_acc), ("trained", model, acc)), modes):
                # a copy: a train-mode client step moves the running statistics the eval-mode audit uses
                row = audit_row(copy.deepcopy(net), images, labels, refs, args, batchnorm, size)
                row.update(model=name, weights=f"{weights} ({a:.1%})", client=f"{batchnorm}, batch {size}")
                rows.append(row)
                print(f"  {weights}, client BatchNorm {batchnorm}, batch {size}: {row['verdict']}, "
                      f"{row['recognised']} of {row['audited']} recognised "
                      f"(95% interval {row['interval'][0]:.0%}-{row['interval'][1]:.0%}), {row['seconds']:.0f} s; "
                      f"each matched among {row['references'] + 1} (itself and {row['references']} references)",
                      flush=True)
                for label, attack, skill, p, rec in row["per_sample"]:
                    print(f"    label {label}: {attack} ssim_skill {skill if skill is None else f'{skill:.2f}'} "
                          f"match_p {p if p is None else f'{p:.3f}'}{' recognised' if rec else ''}", flush=True)

    print(f"\n{args.dataset}, budget {args.budget}, 6 held-out samples, references: {len(ref_y)} other "
          f"{ref_kind} samples\n")
    print("| model | weights (held-out accuracy) | client BatchNorm, batch | verdict | recognised of 6 "
          "| best attack (samples) | median ssim_skill | median match_p | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['weights']} | {r['client']} | {r['verdict']} | "
              f"{r['recognised']} of {r['audited']} | "
              f"{r['attack']} | {r['skill']:.2f} | {r['p']:.3f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
