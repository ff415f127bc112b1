"""Audit a Flower model before it is deployed: would the server see a client's photo in the update?

Two ways to use leakaudit with Flower (https://flower.ai), both through the Python API (``docs/api.md``):

1. A pre-deployment script (``main`` below): build the model of Flower's quickstart (the PyTorch CIFAR-10
   CNN: conv5-pool-conv5-pool-fc120-fc84-fc10, 3x32x32 input, 10 classes) as a plain ``torch.nn.Module``,
   audit it on a bundled photo, and exit with leakaudit's CI exit code (0 pass, 1 leak, 4 inconclusive):

       python examples/flower_predeploy.py                 # standard budget: 15.9 s on 2 CPU cores
       python examples/flower_predeploy.py --budget quick  # a quicker, weaker check: 6.7 s

   The untrained CNN comes out inconclusive (exit 4): at these budgets the optimisation attacks do not
   reconstruct a ReLU + max-pooling CNN even without defenses (docs/attacks.md), so no pass is claimed.

2. ``AuditedFedAvg``: a FedAvg strategy that audits each new global model after aggregation and refuses to
   hand on one that leaks. It needs ``flwr`` (``pip install flwr``), which leakaudit does not depend on.

The photo is normalised as the quickstart's clients do (``Normalize((0.5,) * 3, (0.5,) * 3)``): leakaudit
gets the pixels in [0, 1] and the normalisation, so it scores reconstructions in pixel space.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import leakaudit
from leakaudit.data import load_samples, normalization

SAMPLES = Path(__file__).resolve().parent / "samples"
# The quickstart's transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), as leakaudit settings.
NORMALIZE: dict[str, Any] = {"normalize": "custom", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class Net(nn.Module):
    """The CNN of Flower's PyTorch quickstart (after the PyTorch CIFAR-10 tutorial)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def bundled_photo(name: str = "astronaut.png") -> tuple[torch.Tensor, torch.Tensor]:
    """One bundled photo at 32x32 as (images in [0, 1] of shape (1, 3, 32, 32), labels), as a client holds it."""
    batch = load_samples(SAMPLES, input_shape=(3, 32, 32), num_classes=10, normalization=normalization("none"))
    i = batch.names.index(name)
    return batch.pixels[i:i + 1], batch.y[i:i + 1]


def predeploy_audit(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, **settings: Any) -> Any:
    """The audit of ``net`` on a client's ``(images, labels)``: the update one FedSGD client step sends."""
    return leakaudit.audit(net, (images, labels), input_shape=(3, 32, 32), **NORMALIZE, **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Audit Flower's quickstart CNN before deployment.")
    parser.add_argument("--budget", default="standard", help="quick, standard or thorough (default standard)")
    parser.add_argument("--iterations", type=int, default=None, help="override every attack's iterations")
    parser.add_argument("--restarts", type=int, default=None, help="override every attack's restarts")
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # the untrained global model of round 0
    images, labels = bundled_photo()
    result = predeploy_audit(Net(), images, labels, budget=args.budget, iterations=args.iterations,
                             restarts=args.restarts)
    print(f"{result.model.path} sha256 {result.model.sha256[:12]}: {result.overall}")
    print(result.outcome.summary)
    for attack in result.attacks:
        shown = f"ssim {attack.means['ssim']:.3g}" if attack.ran and "ssim" in attack.means else attack.reason
        print(f"  {attack.name:<18}{attack.status:<8}{shown}")
    return result.exit_code


try:  # the strategy needs Flower; the script above does not
    import flwr
    from flwr.common import parameters_to_ndarrays
    from flwr.server.strategy import FedAvg
except ImportError:
    flwr = None
else:
    class AuditedFedAvg(FedAvg):
        """FedAvg that audits the initial global model before any client trains on it: if the update one client
        step sends lets the server reconstruct the audit sample, the server does not start.

        Give the strategy ``initial_parameters`` (e.g. ``ndarrays_to_parameters`` of ``Net().state_dict()``'s
        values) and a sample batch of your own data; add a client-side defense and simulate it with
        ``audit_settings={"defenses": ("noise:sigma=0.1",)}`` to gate the deployment you will actually run.
        """

        def __init__(self, *args: Any, audit_data: tuple[torch.Tensor, torch.Tensor],
                     audit_settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.audit_data = audit_data
            self.audit_settings = dict(audit_settings or {})
            self.audit_result: Any = None

        def initialize_parameters(self, client_manager: Any) -> Any:
            parameters = super().initialize_parameters(client_manager)
            if parameters is None:
                raise RuntimeError("AuditedFedAvg needs initial_parameters: the model it audits before deployment")
            net = Net()
            arrays = parameters_to_ndarrays(parameters)
            net.load_state_dict({n: torch.from_numpy(a) for n, a in zip(net.state_dict(), arrays, strict=True)})
            self.audit_result = predeploy_audit(net, *self.audit_data, **self.audit_settings)
            if self.audit_result.exit_code != 0:  # a leak, an inconclusive audit or a crashed attack
                raise RuntimeError(f"leakaudit: not deploying this global model: {self.audit_result.outcome.summary}")
            return parameters


if __name__ == "__main__":
    sys.exit(main())
