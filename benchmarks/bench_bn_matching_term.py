"""Would BatchNorm statistics help gradient matching? A standalone IG loop with and without a matching term.

Issue 24 item 2 asks to use the BatchNorm batch statistics a server recovers from the running statistics in the
update (``--update-buffers yes``; ``leakaudit.attacks.bnstats.recover``) as a matching term where matching is
stable. The engine does not have that term yet; this measures whether it is worth building. A small BN CNN
(conv3x3(16)-BN-ReLU-pool, conv3x3(32)-BN-ReLU-pool, Linear(2048,10)), random weights, train mode, 32x32 photos
at batch 4 (every BN layer sees >= 1,024 values per channel: the update is stable), labels known. The client's
step is one forward/backward; the server recovers each layer's batch mean and variance from the running-stat
delta. IG: 1 - cosine over all gradients + 1e-2 TV, Adam on the gradient's sign, lr 0.1 with step decay, one
restart, inputs in [0, 1]; the term adds ``lambda * sum_l (mean_sq_err(mu_l) + mean_sq_err(var_l))`` over the
BN layers' input statistics. SSIM per original, best over the batch's reconstructions.

Usage: python benchmarks/bench_bn_matching_term.py [--iterations 500] [--lambdas 0,0.1,1,10,100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (("astronaut", "chelsea", "coffee", "rocket"), ("coffee", "rocket", "camera", "retina"))


def _pixels(name: str) -> torch.Tensor:
    image = Image.open(ROOT / "examples" / "samples" / f"{name}.png").convert("RGB").resize((32, 32))
    return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


def _forward(net: BNNet, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Logits and each BN layer's input mean and unbiased variance per channel (what the running stats fold in)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def record(_m: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            seen[name] = (args[0].mean((0, 2, 3)), args[0].var((0, 2, 3), unbiased=True))
        return record

    handles = [net.get_submodule(n).register_forward_hook(hook(n)) for n in ("b1", "b2")]
    try:
        return net(x), seen
    finally:
        for h in handles:
            h.remove()


def _invert(net: BNNet, observed: list[torch.Tensor], stats: dict, labels: torch.Tensor, lam: float,
            iterations: int) -> torch.Tensor:
    params = list(net.parameters())
    torch.manual_seed(0)
    x = torch.rand(len(labels), 3, 32, 32).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    onorm = torch.sqrt(sum((o * o).sum() for o in observed))
    for _ in range(iterations):
        opt.zero_grad()
        out, seen = _forward(net, x)
        g = torch.autograd.grad(nn.functional.cross_entropy(out, labels), params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(g, observed, strict=True))
        loss = 1 - dot / (torch.sqrt(sum((a * a).sum() for a in g)) * onorm)
        loss = loss + 1e-2 * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean())
        if lam:
            loss = loss + lam * sum(((seen[k][0] - stats[k][0]) ** 2).mean() + ((seen[k][1] - stats[k][1]) ** 2).mean()
                                    for k in stats)
        loss.backward()
        assert x.grad is not None
        x.grad = x.grad.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--lambdas", default="0,0.1,1,10,100")
    args = parser.parse_args()
    from leakaudit.attacks.bnstats import recover
    from leakaudit.metrics.functional import ssim

    torch.set_num_threads(1)
    print("batch | lambda | SSIM per original | mean | seconds | worst relative error of the recovered statistics")
    for names in BATCHES:
        torch.manual_seed(0)
        net = BNNet().train()
        old = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
        pixels = torch.stack([_pixels(n) for n in names])
        labels = torch.arange(len(names)) % 10
        out, truth = _forward(net, pixels)  # the client's step: updates the running statistics once
        observed = [g.detach() for g in torch.autograd.grad(nn.functional.cross_entropy(out, labels),
                                                             list(net.parameters()))]
        new = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
        stats = {r.name: (r.mean.float(), r.var.float()) for r in recover(net, old, new, len(names), (3, 32, 32))}
        error = max(float(((stats[k][i] - truth[k][i].detach()).norm() / truth[k][i].detach().norm()))
                    for k in stats for i in (0, 1))
        for lam in (float(v) for v in args.lambdas.split(",")):
            start = time.perf_counter()
            rec = _invert(net, observed, stats, labels, lam, args.iterations)
            scores = [max(float(ssim(r[None], p[None])) for r in rec) for p in pixels]
            print(f"{'+'.join(names)} | {lam:g} | {' / '.join(f'{s:.3f}' for s in scores)} | "
                  f"{np.mean(scores):.3f} | {time.perf_counter() - start:.1f} | {error:.1e}", flush=True)


if __name__ == "__main__":
    main()
