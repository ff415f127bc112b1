"""What detection finds in a model: the layers that change how gradients leak."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DropoutLayer:
    name: str  # module path in the loaded torch module (e.g. "features.3" or an onnx2torch node name)
    p: float
    position: int  # index in forward execution order among all leaf modules
    source: str  # "module" (torch structure), "onnx" (Dropout node in the file) or "declared" (--dropout)


@dataclass(frozen=True)
class Bottleneck:
    """A variational (PRECODE-style) bottleneck: sampling makes its gradients and all after it stochastic."""

    name: str
    latent_dim: int | None
    position: int
    source: str  # "module" or "onnx"
    params_after: tuple[str, ...]  # trainable parameter names at or after the sampling step
    params_before: tuple[str, ...]  # trainable parameter names strictly before it (what PRECODE-aware matches)


@dataclass(frozen=True)
class Findings:
    layers: tuple[tuple[str, str, int], ...]  # (name, type, trainable elements) of leaf modules in forward order
    dropout: tuple[DropoutLayer, ...] = ()
    bottlenecks: tuple[Bottleneck, ...] = ()
    batchnorm: tuple[str, ...] = ()
    unrecognized_stochastic: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # leakaudit.modality: what kind of sample the model takes, and why detection says so (shown by inspect)
    modality: str = "image"
    modality_reason: str = ""

    @property
    def has_dropout(self) -> bool:
        return bool(self.dropout)

    @property
    def has_bottleneck(self) -> bool:
        return bool(self.bottlenecks)
