"""Simulate one FL client: what the server receives after the client trains on the user's batch.

The client trains in train mode, as a real one does: every ``MaskableDropout`` samples a fresh mask and
every PRECODE bottleneck fresh noise. The user's model is left as it was found -- parameters, buffers
(BatchNorm running statistics) and each module's train/eval mode -- because the attacks run on it next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import functional_call

from ..data.interface import SampleBatch
from ..detect.interface import Findings
from ..errors import ConfigError, DataError, ModelError, setting_ref
from ..models.interface import LoadedModel
from ..models.layers import MaskableDropout, VariationalBottleneck
from .defenses import apply_defenses
from .interface import BatchStatistics, ClientUpdate, LocalTraining, ThreatModel
from .local import local_sgd
from .losses import LOSSES, client_loss

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
BATCH_SIZE = setting_ref("batch_size")
INPUT_SHAPE = setting_ref("input_shape")
NORMALIZE = setting_ref("normalize")
NUM_CLASSES = setting_ref("num_classes")

PROTOCOLS = ("fedsgd", "fedavg")


def client_update(model: LoadedModel, batch: SampleBatch, threat: ThreatModel, findings: Findings | None = None,
                  *, seed: int | None = None, record_masks: bool = True) -> ClientUpdate:
    """The update one client sends for ``batch`` under ``threat`` (defenses in ``threat.defenses`` applied).

    FedSGD: the gradient of the mean loss over the batch w.r.t. ``model.trainable()``.
    FedAvg: ``threat.local_steps`` SGD steps with ``threat.local_lr`` on a copy of the weights; the update
    is ``(w_E - w_0) / (-lr * E)``, i.e. the mean gradient along the local trajectory.
    ``seed`` makes the dropout/PRECODE sampling (and seeded defenses) repeatable without touching the
    caller's global RNG state; ``findings`` is needed only by defenses that target layers (PPP).
    """
    _check_threat(threat)
    params = model.trainable()
    if not params:
        raise ModelError(f"{model.path}: the model has no trainable parameters, so a client sends no update; "
                         "export it with its weights as trainable initializers")
    x, y = batch_on_model_device(model, batch)
    truth: dict[str, BatchStatistics] = {}
    buffers: dict[str, torch.Tensor] = {}
    with seeded(seed, x.device), preserved(model.module):
        client_mode(model.module, threat.batchnorm)
        handles = _statistics_hooks(model.module, truth) if threat.buffers else []
        try:
            gradients, masks = _local_training(model, x, y, threat, record_masks)
            if threat.buffers:  # what the client's BatchNorm layers hold after training, before preserved() resets
                buffers = {n: b.detach().clone() for n, b in model.module.named_buffers() if _is_statistic(n)}
        except ValueError as e:
            # A BatchNorm leakaudit's check (models.batchnorm) did not see, e.g. F.batch_norm in user code.
            if "more than 1 value per channel" not in str(e):
                raise
            raise ConfigError(f"{BATCH_SIZE} {len(batch)}: a BatchNorm layer of {model.path} cannot run in train "
                              f"mode at that batch ({str(e).splitlines()[0][:160]}); give {BATCH_SIZE} 2 or "
                              "more") from e
        finally:
            for h in handles:
                h.remove()
    clean = dataclasses.replace(threat, defenses=())
    update = ClientUpdate(gradients=gradients, threat=clean, num_samples=len(batch), true_dropout_masks=masks,
                          buffers=buffers, true_batch_statistics=truth)
    # apply_defenses records each applied defense back into update.threat.defenses
    return apply_defenses(update, threat.defenses, findings, seed=seed) if threat.defenses else update


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _is_statistic(name: str) -> bool:
    return name.rpartition(".")[2] in STATISTICS


def _statistics_hooks(module: nn.Module, truth: dict[str, BatchStatistics]) -> list[Any]:
    """Record each train-mode BatchNorm layer's batch statistics in its first call (the first local step): the
    ground truth a server's recovery from the buffers is scored against (``attacks.bnstats``)."""
    handles = []
    for name, m in module.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue

        def record(layer: nn.Module, inputs: tuple, name: str = name) -> None:
            x = inputs[0] if inputs else None
            if name in truth or not layer.training or not isinstance(x, torch.Tensor) or x.dim() < 2:
                return
            with torch.no_grad():
                per_channel = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()  # (C, N*H*W)
                n = per_channel.shape[1]
                truth[name] = BatchStatistics(per_channel.mean(1), per_channel.var(1, unbiased=True) if n > 1
                                              else torch.zeros(x.shape[1], dtype=torch.float64, device=x.device),
                                              n, per_channel.T.clone() if n == 2 else None)

        handles.append(m.register_forward_pre_hook(record))
    return handles


def client_mode(module: nn.Module, batchnorm: str = "train") -> None:
    """Put ``module`` in the mode the client trains in: train mode, with BatchNorm layers in eval mode (running
    statistics) when the threat model says the client freezes them (``ThreatModel.batchnorm``)."""
    module.train()
    if batchnorm == "eval":
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _local_training(model: LoadedModel, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                    record_masks: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The mean gradient over the local steps (one step under FedSGD), and each step's dropout masks."""
    weights = {n: p.detach().clone().requires_grad_(True) for n, p in model.trainable().items()}
    step_masks: list[dict[str, torch.Tensor]] = []

    def loss_at(_step: int, current: dict[str, torch.Tensor]) -> torch.Tensor:
        with _recording(model.module, record_masks) as masks:
            outputs = functional_call(model.module, current, (x,), strict=False)
            loss = client_loss(model.module, outputs, y, threat.loss)
        if not torch.isfinite(loss):
            raise ModelError(f"{model.path}: the client loss is {loss.item()} on these samples; check that "
                             f"{NORMALIZE} matches how the model was trained and that the weights are finite")
        step_masks.append(masks)
        return loss

    local = threat.local_training() or LocalTraining(steps=1, lr=threat.local_lr)  # FedSGD: the first gradient
    gradients = local_sgd(loss_at, weights, local, create_graph=False)
    return {n: g.detach() for n, g in gradients.items()}, _merge_masks(step_masks)


def _merge_masks(step_masks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if len(step_masks) == 1:
        return step_masks[0]
    return {n: torch.stack([m[n] for m in step_masks]) for n in step_masks[0]}


def check_protocol(protocol: object, where: str = setting_ref("protocol")) -> str:
    """``protocol`` when the client simulates it: the one check of the setting (config file, flags, threat)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where} {protocol}: unknown protocol; use one of {', '.join(PROTOCOLS)}")
    return str(protocol)


def _check_threat(threat: ThreatModel) -> None:
    check_protocol(threat.protocol)
    from ..models.batchnorm import check_client_batchnorm

    check_client_batchnorm(threat.batchnorm, "ThreatModel.batchnorm")
    if threat.protocol == "fedavg":
        if threat.local_steps < 1:
            raise ConfigError(f"{setting_ref('local_steps')} {threat.local_steps}: must be at least 1; use 1 or more")
        if not (threat.local_lr > 0 and math.isfinite(threat.local_lr)):
            raise ConfigError(f"{setting_ref('local_lr')} {threat.local_lr}: must be a positive number; use e.g. 0.1")
    LOSSES.get(threat.loss)  # unknown loss -> UnknownNameError listing the available ones


def batch_on_model_device(model: LoadedModel, batch: SampleBatch) -> tuple[torch.Tensor, torch.Tensor]:
    if len(batch) == 0:
        raise DataError(f"{batch.source}: the batch is empty; give at least one sample")
    if tuple(batch.x.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"{batch.source}: samples have shape {tuple(batch.x.shape[1:])} but the model expects "
                        f"{tuple(model.input_shape)}; resize the samples or pass {INPUT_SHAPE}")
    if batch.y.dtype == torch.int64 and (batch.y.min() < 0 or batch.y.max() >= model.num_classes):
        raise DataError(f"{batch.source}: labels must lie in 0..{model.num_classes - 1} for this model, got "
                        f"{int(batch.y.min())}..{int(batch.y.max())}; fix the labels or pass {NUM_CLASSES}")
    device = _device_of(model.module)
    return batch.x.to(device), batch.y.to(device)


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU and the model's CUDA device) so a seed does not leak into the caller."""
    if seed is None:
        yield
        return
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def preserved(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag, every buffer (BatchNorm statistics move in train mode) and
    each bottleneck's last ``kl``."""
    modes = [(m, m.training) for m in module.modules()]
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    # A bottleneck's ``kl`` would otherwise keep this pass's autograd graph alive (and block deepcopy).
    kls = [(m, m.kl) for m in module.modules() if isinstance(m, VariationalBottleneck)]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for m, kl in kls:
            m.kl = kl
        with torch.no_grad():
            for n, b in module.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])


@contextlib.contextmanager
def _recording(module: nn.Module, enabled: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Switch on mask recording of every MaskableDropout for one forward pass; collect the masks on exit."""
    masks: dict[str, torch.Tensor] = {}
    if not enabled:
        yield masks
        return
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, MaskableDropout)]
    saved = [(m.record, m.last_mask) for _, m in layers]
    for _, m in layers:
        m.record, m.last_mask = True, None
    try:
        yield masks
        for n, m in layers:
            if m.last_mask is not None:
                masks[n] = m.last_mask
    finally:
        for (_, m), (record, last) in zip(layers, saved, strict=True):
            m.record, m.last_mask = record, last
