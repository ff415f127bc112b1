"""Converters onnx2torch (1.5.x) lacks, registered through its public ``add_converter`` API.

Importing this module registers them once. What needed work, and why:

- **Random ops** (``RandomNormal(Like)``, ``RandomUniform(Like)``, ``Bernoulli``): no converter at all. They
  become live modules (``OnnxRandomOp`` subclasses) that draw a fresh sample on every forward, in train *and*
  eval mode, as the ONNX semantics say: a PRECODE bottleneck exported as ``RandomNormalLike -> Mul -> Add``
  stays stochastic, which is the whole point of auditing it. ``seed`` attributes are ignored (a server does
  not know the client's random state). Like ``MaskableDropout.mask``, a ``sample`` buffer can be substituted
  (well-informed attacks, tests) and ``record = True`` keeps the last draw in ``last_sample``.
- **Dropout**: onnx2torch turns it into ``F.dropout`` with the ratio as a runtime input; we need the rate at
  load time and a ``MaskableDropout`` attacks can drive, so the converters for every Dropout version are
  replaced (``_replace_converter``; onnx2torch has no public override). The ratio comes from the ``ratio``
  input (initializer or Constant) or, before opset 12, the attribute. ``training_mode`` is not read: the
  module is live in train mode and identity in eval mode, like ``nn.Dropout`` (a client trains with it).
- **Opset 19-25 versions** of ops whose newer versions only widened the accepted types (float8/int4/float4,
  bfloat16, strings): ``Constant``, ``Cast``, ``Shape``, ``Transpose``, ``Flatten``, ``Squeeze``, ... and the
  opset-22 bfloat16 bumps (``Conv``, ``MaxPool``, ``GlobalAveragePool``, ...). Current torch exports these
  (opset 20 by default in torch 2.14: ``Constant``-19; ``Transpose``-21 at 21; ``Conv``-22 at 22). They reuse
  onnx2torch's converter of the previous version (``_alias``); ``AveragePool``-19/22 only without dilations.
- **Reshape** with ``allowzero=1`` (set on every Reshape by torch's dynamo exporter; onnx2torch refuses it),
  Reshape-19/21; a constant target shape is read once at load time (no GPU->host copy per forward).
- **Slice**: re-implemented with tuple indexing (onnx2torch's list indexing is deprecated in torch), constant
  bounds read once at load time.
- **Split-18** with ``num_outputs`` (the TorchScript exporter's ``qkv.unbind`` in attention at opset 18+).
- **Reduce ops at opset 18/20** (axes moved from an attribute to an input), **Pad-18/19** (``axes`` input),
  **Gelu-20**, ``Size``, ``CastLike``: small new converters.

Graph-level fixes (training-mode ``BatchNormalization`` outputs, unused Dropout mask outputs, merged
initializers) live in ``onnx_loader``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from onnx import TensorProto, defs

from .onnx2torch_import import ensure_converters  # before onnx2torch's first import: it keeps torchvision out
from onnx2torch.node_converters import add_converter, get_converter
from onnx2torch.node_converters import registry as _o2t_registry
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from onnx2torch.utils.common import onnx_mapping_from_node
from torch import nn

from .layers import MaskableDropout

ONNX_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8, TensorProto.BOOL: torch.bool,
}


# --------------------------------------------------------------------------------------------------- random ops
class OnnxRandomOp(nn.Module, OnnxToTorchModule):
    """Base of the live random modules. Subclasses implement ``draw(reference)``."""

    def __init__(self, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.dtype = dtype
        # Buffers, declared for the type checker: ``sample`` is an attack's substitute draw; ``_anchor`` an empty
        # tensor that follows .to(device), so ops without an input tensor (RandomNormal/RandomUniform) sample there.
        self.sample: torch.Tensor | None
        self._anchor: torch.Tensor
        self.register_buffer("sample", None, persistent=False)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.record = False
        self.last_sample: torch.Tensor | None = None

    def _out_dtype(self, reference: torch.Tensor | None) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        return reference.dtype if reference is not None else torch.float32

    def forward(self, reference: torch.Tensor | None = None) -> torch.Tensor:
        if self.sample is not None:
            return self.sample
        out = self.draw(reference)
        if self.record:
            self.last_sample = out.detach()
        return out

    def draw(self, reference: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class OnnxRandomNormal(OnnxRandomOp):
    """``RandomNormal`` (fixed ``shape``) / ``RandomNormalLike`` (shape of the input): N(mean, scale^2)."""

    def __init__(self, mean: float, scale: float, dtype: torch.dtype | None,
                 shape: tuple[int, ...] | None = None) -> None:
        super().__init__(dtype)
        self.mean, self.scale, self.shape = mean, scale, shape

    def draw(self, reference: torch.Tensor | None) -> torch.Tensor:
        shape = self.shape if self.shape is not None else _given(reference).shape
        device = reference.device if reference is not None else _module_device(self)
        return torch.randn(shape, device=device, dtype=self._out_dtype(reference)) * self.scale + self.mean

    def extra_repr(self) -> str:
        return f"mean={self.mean}, scale={self.scale}" + (f", shape={self.shape}" if self.shape else "")


class OnnxRandomUniform(OnnxRandomOp):
    """``RandomUniform`` / ``RandomUniformLike``: U[low, high)."""

    def __init__(self, low: float, high: float, dtype: torch.dtype | None,
                 shape: tuple[int, ...] | None = None) -> None:
        super().__init__(dtype)
        self.low, self.high, self.shape = low, high, shape

    def draw(self, reference: torch.Tensor | None) -> torch.Tensor:
        shape = self.shape if self.shape is not None else _given(reference).shape
        device = reference.device if reference is not None else _module_device(self)
        return torch.rand(shape, device=device, dtype=self._out_dtype(reference)) * (self.high - self.low) + self.low

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}" + (f", shape={self.shape}" if self.shape else "")


class OnnxBernoulli(OnnxRandomOp):
    """``Bernoulli``: 1 with the probability given by the input, else 0."""

    def draw(self, reference: torch.Tensor | None) -> torch.Tensor:
        return torch.bernoulli(_given(reference)).to(self._out_dtype(reference))


def _given(reference: torch.Tensor | None) -> torch.Tensor:
    """The input tensor of a *Like op (its converter always wires one): shape and probabilities come from it."""
    if reference is None:
        raise ValueError("this random op takes its shape from an input tensor, and none was given")
    return reference


def _module_device(module: OnnxRandomOp) -> torch.device:
    return module._anchor.device


def _dtype_attr(node: OnnxNode) -> torch.dtype | None:
    code = node.attributes.get("dtype")
    if code is None:
        return None
    if code not in ONNX_DTYPES:
        raise NotImplementedError(f"{node.operation_type} with dtype {code} is not supported")
    return ONNX_DTYPES[code]


def _random_like_result(node: OnnxNode, module: nn.Module) -> OperationConverterResult:
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def _random_shaped_result(node: OnnxNode, module_cls: type, *params: float) -> OperationConverterResult:
    """RandomNormal / RandomUniform: no input, the shape and dtype (float32 by default) are attributes."""
    module = module_cls(*params, _dtype_attr(node) or torch.float32, shape=tuple(node.attributes["shape"]))
    return OperationConverterResult(module, OnnxMapping(inputs=(), outputs=node.output_values))


@add_converter(operation_type="RandomNormalLike", version=1)
@add_converter(operation_type="RandomNormalLike", version=22)
def _random_normal_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    a = node.attributes
    return _random_like_result(node, OnnxRandomNormal(a.get("mean", 0.0), a.get("scale", 1.0), _dtype_attr(node)))


@add_converter(operation_type="RandomNormal", version=1)
@add_converter(operation_type="RandomNormal", version=22)
def _random_normal(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    a = node.attributes
    return _random_shaped_result(node, OnnxRandomNormal, a.get("mean", 0.0), a.get("scale", 1.0))


@add_converter(operation_type="RandomUniformLike", version=1)
@add_converter(operation_type="RandomUniformLike", version=22)
def _random_uniform_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    a = node.attributes
    return _random_like_result(node, OnnxRandomUniform(a.get("low", 0.0), a.get("high", 1.0), _dtype_attr(node)))


@add_converter(operation_type="RandomUniform", version=1)
@add_converter(operation_type="RandomUniform", version=22)
def _random_uniform(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    a = node.attributes
    return _random_shaped_result(node, OnnxRandomUniform, a.get("low", 0.0), a.get("high", 1.0))


@add_converter(operation_type="Bernoulli", version=15)
@add_converter(operation_type="Bernoulli", version=22)
def _bernoulli(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _random_like_result(node, OnnxBernoulli(_dtype_attr(node)))


# ------------------------------------------------------------------------------------------------------- dropout
class OnnxDropout(MaskableDropout, OnnxToTorchModule):
    """A ``Dropout`` node of the file: a ``MaskableDropout`` with the node's ratio (``onnx_node`` keeps its name)."""

    def __init__(self, p: float, onnx_node: str) -> None:
        super().__init__(p)
        self.onnx_node = onnx_node


def _dropout_ratio(node: OnnxNode, graph: OnnxGraph) -> float:
    """The rate, rounded to 6 decimals: ONNX stores it as float32 (0.2 reads back as 0.20000000298)."""
    if len(node.input_values) > 1 and node.input_values[1]:
        value = get_const_value(node.input_values[1], graph)
        return round(float(value.item() if isinstance(value, torch.Tensor) else value), 6)
    return round(float(node.attributes.get("ratio", 0.5)), 6)


def _dropout(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if len(node.output_values) > 1 and node.output_values[1]:
        # The loader strips unused mask outputs; one still here feeds another node.
        raise NotImplementedError("Dropout whose mask output is used by the graph")
    try:
        ratio = _dropout_ratio(node, graph)
    except KeyError as e:
        raise NotImplementedError("Dropout with a ratio computed at run time (not a constant)") from e
    module = OnnxDropout(ratio, onnx_node=node.name or node.unique_name)
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def _replace_converter(op_type: str, version: int, converter: Callable) -> None:
    """Register ``converter`` even where onnx2torch has its own (its ``add_converter`` refuses duplicates)."""
    key = _o2t_registry.OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op_type, version=version)
    _o2t_registry._CONVERTER_REGISTRY[key] = converter  # noqa: SLF001 -- no public override exists


for _version in (1, 6, 7, 10, 12, 13, 22):
    _replace_converter("Dropout", _version, _dropout)


# ------------------------------------------------------------------------------------------ newer op versions
def _has_converter(op_type: str, version: int) -> bool:
    key = _o2t_registry.OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op_type, version=version)
    return key in _o2t_registry._CONVERTER_REGISTRY  # noqa: SLF001


def _latest_below(op_type: str, version: int) -> int | None:
    versions = [k.version for k in _o2t_registry._CONVERTER_REGISTRY  # noqa: SLF001
                if k.domain == defs.ONNX_DOMAIN and k.operation_type == op_type and k.version < version]
    return max(versions) if versions else None


def _alias(op_type: str, versions: tuple[int, ...], converter: Callable | None = None) -> None:
    """Register ``converter`` (default: onnx2torch's newest older one) for ``versions`` that only widened the
    accepted types."""
    for version in versions:
        if _has_converter(op_type, version):
            continue
        chosen = converter
        if chosen is None:
            previous = _latest_below(op_type, version)
            if previous is None:
                continue
            chosen = _o2t_registry._CONVERTER_REGISTRY[  # noqa: SLF001
                _o2t_registry.OperationDescription(defs.ONNX_DOMAIN, op_type, previous)]
        add_converter(operation_type=op_type, version=version)(chosen)


_LATER = (23, 24, 25, 28)  # type-only bumps after opset 21 (float4/float8e8m0 support)
_TYPE_ONLY_UPDATES: dict[str, tuple[int, ...]] = {
    "Constant": (19, 21, *_LATER),
    "Cast": (19, 21, *_LATER),
    "ConstantOfShape": (20, 21, *_LATER),
    "Shape": (19, 21, *_LATER),
    "Identity": (19, 21, *_LATER),
    "Transpose": (21, *_LATER),
    "Flatten": (21, *_LATER),
    "Squeeze": (21, *_LATER),
    "Unsqueeze": (21, *_LATER),
    "Equal": (19,),
    "IsInf": (20,),
    "IsNaN": (20,),
    # Opset 22 added bfloat16 to these; nothing else changed.
    **{op: (22,) for op in ("Conv", "ConvTranspose", "GlobalAveragePool", "MaxPool", "HardSigmoid", "HardSwish",
                            "Elu", "Selu", "Softplus", "Softsign", "Round", "InstanceNormalization", "Sin", "Cos",
                            "EyeLike")},
}
for _op, _versions in _TYPE_ONLY_UPDATES.items():
    _alias(_op, _versions)


def _average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """AveragePool-19 added ``dilations``; onnx2torch's converter ignores them, so only all-ones pass."""
    if any(d != 1 for d in node.attributes.get("dilations", [])):
        raise NotImplementedError("AveragePool with dilations")
    return get_converter("AveragePool", 11)(node, graph)


_alias("AveragePool", (19, 22), _average_pool)


class OnnxReshapeConst(nn.Module, OnnxToTorchModule):
    """Reshape to a target known at load time (the usual case): no device -> host copy of the shape on
    every forward, which would stall a GPU attack thousands of times. ``allowzero=1`` (set on every Reshape by
    torch's dynamo exporter; onnx2torch refuses it) makes a 0 a zero-size dimension, as in ``torch.reshape``;
    otherwise a 0 copies the input's dimension."""

    def __init__(self, shape: list[int], allowzero: bool) -> None:
        super().__init__()
        self.shape, self.allowzero = shape, allowzero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.allowzero or 0 not in self.shape:
            return torch.reshape(x, self.shape)
        return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class OnnxReshapeAllowZero(nn.Module, OnnxToTorchModule):
    """Reshape with ``allowzero=1`` to a target computed at run time."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(d) for d in shape.tolist()])


_onnx2torch_reshape = get_converter("Reshape", 14)


def _const_ints(name: str, graph: OnnxGraph) -> list[int] | None:
    """The integer list an input holds when it is an initializer or a Constant, else None."""
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    allowzero = bool(node.attributes.get("allowzero", 0))
    shape = _const_ints(node.input_values[1], graph)
    if shape is not None:
        module = OnnxReshapeConst(shape, allowzero)
        return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))
    if allowzero:
        return OperationConverterResult(OnnxReshapeAllowZero(), onnx_mapping_from_node(node))
    return _onnx2torch_reshape(node, graph)


for _version in (14, 19, 21, *_LATER):
    _replace_converter("Reshape", _version, _reshape)


class OnnxSplitEven(nn.Module, OnnxToTorchModule):
    """Split-18 with ``num_outputs``: chunks of ceil(d / n), the last one smaller (what ``torch.split`` does)."""

    def __init__(self, axis: int, num_outputs: int) -> None:
        super().__init__()
        self.axis, self.num_outputs = axis, num_outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = -(-x.shape[self.axis] // self.num_outputs)
        return tuple(torch.split(x, size, dim=self.axis))


_onnx2torch_split = get_converter("Split", 13)


@add_converter(operation_type="Split", version=18)
def _split(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    num_outputs = node.attributes.get("num_outputs")
    if num_outputs is None or (len(node.input_values) > 1 and node.input_values[1]):
        return _onnx2torch_split(node, graph)
    module = OnnxSplitEven(node.attributes.get("axis", 0), int(num_outputs))
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def _slice_once(x: torch.Tensor, start: int, end: int, axis: int, step: int) -> torch.Tensor:
    axis = axis % x.dim()
    first, stop, stride = slice(start, end, step).indices(x.shape[axis])
    if stride > 0:
        index: list = [slice(None)] * x.dim()
        index[axis] = slice(first, stop, stride)
        return x[tuple(index)]
    return x.index_select(axis, torch.arange(first, stop, stride, device=x.device))


class OnnxSliceIndexing(nn.Module, OnnxToTorchModule):
    """Slice-10+ by basic indexing with a tuple: onnx2torch indexes with a list, which torch deprecated
    (and warns about on every forward of an attention model); negative steps select indices explicitly.
    ONNX clamps starts/ends exactly as Python's ``slice.indices`` does. ``bounds`` holds the
    (start, end, axis, step) rows when they are constants of the graph (no host copy per forward)."""

    def __init__(self, bounds: list[tuple[int, int, int, int]] | None = None) -> None:
        super().__init__()
        self.bounds = bounds

    def forward(self, x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
                axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
        bounds = self.bounds
        if bounds is None:
            if starts is None or ends is None:
                raise ValueError("Slice needs starts and ends")  # ONNX requires both inputs
            starts_l, ends_l = starts.tolist(), ends.tolist()
            axes_l = list(range(len(starts_l))) if axes is None else axes.tolist()
            steps_l = [1] * len(starts_l) if steps is None else steps.tolist()
            bounds = list(zip(starts_l, ends_l, axes_l, steps_l, strict=False))  # as many as pair up
        for start, end, axis, step in bounds:
            x = _slice_once(x, int(start), int(end), int(axis), int(step))
        return x


def _slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    names = list(node.input_values[1:]) + [""] * (5 - len(node.input_values))
    values = [_const_ints(n, graph) if n else None for n in names]
    starts, ends, axes, steps = values
    if starts is not None and ends is not None and (axes is not None or not names[2]) \
            and (steps is not None or not names[3]):
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
        module = OnnxSliceIndexing(list(zip(starts, ends, axes, steps, strict=False)))
        return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))
    return OperationConverterResult(OnnxSliceIndexing(), onnx_mapping_from_node(node))


for _version in (10, 11, 13):
    _replace_converter("Slice", _version, _slice)


class OnnxSize(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def _size(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(OnnxSize(), onnx_mapping_from_node(node))


_alias("Size", (1, 13, 19, 21, *_LATER), _size)


class OnnxCastLike(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


def _cast_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(OnnxCastLike(), onnx_mapping_from_node(node))


_alias("CastLike", (15, 19, 21, *_LATER), _cast_like)


@add_converter(operation_type="Gelu", version=20)
def _gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    approximate = node.attributes.get("approximate", "none")
    return OperationConverterResult(nn.GELU(approximate=approximate), onnx_mapping_from_node(node))


class OnnxPadAxes(nn.Module, OnnxToTorchModule):
    """Pad-18+: ``pads`` for the listed ``axes`` only (or all axes when ``axes`` is absent)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = {"edge": "replicate"}.get(mode, mode)

    def forward(self, x: torch.Tensor, pads: torch.Tensor, constant_value: torch.Tensor | None = None,
                axes: torch.Tensor | None = None) -> torch.Tensor:
        rank = x.dim()
        axes_list = list(range(rank)) if axes is None else [int(a) % rank for a in axes.tolist()]
        begins, ends = pads.tolist()[: len(axes_list)], pads.tolist()[len(axes_list):]
        torch_pads: list[int] = [0] * (2 * rank)
        for axis, b, e in zip(axes_list, begins, ends, strict=False):
            # F.pad lists (begin, end) pairs from the last axis backwards.
            torch_pads[2 * (rank - 1 - axis)] = int(b)
            torch_pads[2 * (rank - 1 - axis) + 1] = int(e)
        while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0] and self.mode != "constant":
            torch_pads = torch_pads[:-2]  # non-constant modes only pad the trailing spatial axes
        if self.mode == "constant":
            value = 0.0 if constant_value is None else float(constant_value)
            return F.pad(x, torch_pads, mode="constant", value=value)
        return F.pad(x, torch_pads, mode=self.mode)


def _pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode == "wrap":
        raise NotImplementedError("Pad with mode 'wrap'")
    return OperationConverterResult(OnnxPadAxes(mode), onnx_mapping_from_node(node))


_alias("Pad", (18, 19, 21, *_LATER), _pad)


# ----------------------------------------------------------------------------------- reduce ops, opset 18/20
_REDUCERS: dict[str, Callable[..., torch.Tensor]] = {
    "ReduceMean": lambda x, dim, keepdim: torch.mean(x, dim=dim, keepdim=keepdim),
    "ReduceMax": lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim),
    "ReduceMin": lambda x, dim, keepdim: torch.amin(x, dim=dim, keepdim=keepdim),
    "ReduceProd": lambda x, dim, keepdim: _prod(x, dim, keepdim),
    "ReduceL1": lambda x, dim, keepdim: torch.sum(x.abs(), dim=dim, keepdim=keepdim),
    "ReduceL2": lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim)),
    "ReduceSumSquare": lambda x, dim, keepdim: torch.sum(x * x, dim=dim, keepdim=keepdim),
    "ReduceLogSum": lambda x, dim, keepdim: torch.log(torch.sum(x, dim=dim, keepdim=keepdim)),
    "ReduceLogSumExp": lambda x, dim, keepdim: torch.logsumexp(x, dim=dim, keepdim=keepdim),
}


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


class OnnxReduceAxesInput(nn.Module, OnnxToTorchModule):
    """Reduce ops from opset 18 on: ``axes`` is an optional input, ``noop_with_empty_axes`` an attribute."""

    def __init__(self, op_type: str, keepdims: bool, noop_with_empty_axes: bool) -> None:
        super().__init__()
        self.op_type, self.keepdims, self.noop = op_type, keepdims, noop_with_empty_axes

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        if axes is None or axes.numel() == 0:
            if self.noop:
                return x
            dims = list(range(x.dim()))
        else:
            dims = [int(a) for a in axes.tolist()]
        return _REDUCERS[self.op_type](x, dims, self.keepdims)

    def extra_repr(self) -> str:
        return f"{self.op_type}, keepdims={self.keepdims}"


def _reduce(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    a = node.attributes
    module = OnnxReduceAxesInput(node.operation_type, bool(a.get("keepdims", 1)),
                                 bool(a.get("noop_with_empty_axes", 0)))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


for _op in _REDUCERS:
    for _version in (18, 20):
        if _version == 20 and _op not in ("ReduceMax", "ReduceMin"):
            continue
        if not _has_converter(_op, _version):
            add_converter(operation_type=_op, version=_version)(_reduce)


def missing_converters(ops: list[tuple[str, str]], opset: dict[str, int]) -> list[str]:
    """``domain.op`` names among ``ops`` (domain, op_type) that no registered converter handles."""
    ensure_converters(op_type for domain, op_type in ops if domain == "")
    missing: list[str] = []
    for domain, op_type in ops:
        try:
            get_converter(operation_type=op_type, version=opset.get(domain, 1), domain=domain)
        except NotImplementedError:
            name = f"{domain}.{op_type}" if domain else op_type
            if name not in missing:
                missing.append(name)
    return missing



# --------------------------------------------------------------------------------------------------------- LSTM
class OnnxLSTM(nn.Module, OnnxToTorchModule):
    """ONNX ``LSTM`` (forward direction, default activations), computed step by step from its ``W``/``R``/``B``
    inputs. The weights stay runtime inputs, not a fused ``nn.LSTM``: the TorchScript exporter feeds them through
    ``Slice``/``Concat`` from the torch weights (reordering torch's gates i, f, g, o into ONNX's i, o, f, c), so
    the loader keeps those weights as the trained parameters; and the explicit cell has the double backward that
    gradient matching needs on every device (cuDNN's fused LSTM has none)."""

    def __init__(self, hidden_size: int, batch_first: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None = None,
                sequence_lens: torch.Tensor | None = None, initial_h: torch.Tensor | None = None,
                initial_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.batch_first:
            x = x.transpose(0, 1)
        steps, batch, hid = x.shape[0], x.shape[1], self.hidden_size
        h = initial_h[0] if initial_h is not None else x.new_zeros(batch, hid)
        c = initial_c[0] if initial_c is not None else x.new_zeros(batch, hid)
        bias = (b[0, : 4 * hid] + b[0, 4 * hid:]) if b is not None else x.new_zeros(4 * hid)
        pre = x @ w[0].t() + bias  # the input's part of every step at once
        outs = []
        for t in range(steps):
            gates = pre[t] + h @ r[0].t()
            i, o, f, g = gates.split(hid, dim=-1)  # ONNX's gate order: input, output, forget, cell
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        y = torch.stack(outs, dim=0).unsqueeze(1)  # (T, num_directions=1, N, H)
        if self.batch_first:
            y = y.permute(2, 0, 1, 3)  # layout 1: (N, T, 1, H)
            return y, h.unsqueeze(0).transpose(0, 1), c.unsqueeze(0).transpose(0, 1)
        return y, h.unsqueeze(0), c.unsqueeze(0)


_LSTM_DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]


@add_converter(operation_type="LSTM", version=7)
@add_converter(operation_type="LSTM", version=14)
@add_converter(operation_type="LSTM", version=22)
def _lstm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    direction = attrs.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction != "forward":
        raise NotImplementedError(f"LSTM with direction '{direction}' (only forward is converted)")
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if activations and activations != _LSTM_DEFAULT_ACTIVATIONS:
        raise NotImplementedError(f"LSTM with activations {activations}")
    if attrs.get("clip") is not None or attrs.get("input_forget", 0):
        raise NotImplementedError("LSTM with clip or input_forget")
    inputs = list(node.input_values)
    if len(inputs) > 7 and inputs[7]:
        raise NotImplementedError("LSTM with peephole weights (input P)")
    if len(inputs) > 4 and inputs[4]:
        raise NotImplementedError("LSTM with sequence_lens (variable lengths in one batch)")
    module = OnnxLSTM(int(attrs["hidden_size"]), batch_first=bool(attrs.get("layout", 0)))
    return OperationConverterResult(module, OnnxMapping(inputs=tuple(inputs[:7]), outputs=node.output_values))
