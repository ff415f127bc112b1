"""What a small ONNX file may make leakaudit allocate, and which files it may make leakaudit read.

A 1 KB graph can declare a tensor of any size (``ConstantOfShape`` of ``[1, 4e9]`` took 13 GB of RAM),
so before conversion every tensor whose size the file fixes is checked against ``max_elements()``:

- initializers, by their declared dims (before their data is read);
- every value of the graph, by ONNX shape inference with data propagation, run on a copy whose input has
  the sample shape and batch size the model will run at (so shapes computed from ``Shape(x)`` resolve);
- the ops whose output size is data, not structure (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``,
  ``Pad``, ``Resize``, ``Upsample``, ``OneHot``): where inference leaves their output size unknown (exporters
  compute an ``Expand`` target through ``Where``/``Equal``, which data propagation does not follow), their
  converted module gets a forward pre-hook (``SizeGuard``) that computes the output size from the actual
  inputs and raises ``ModelError`` before the op allocates anything.

The bound is per tensor: ``2**28`` elements (1 GiB of float32) by default, set by the environment variable
``LEAKAUDIT_MAX_TENSOR_ELEMENTS``. The largest tensors of the image classifiers leakaudit audits are two
orders of magnitude smaller (ResNet-152's first activation at 224x224 is 0.8M elements per sample, ViT-L's
largest weight 4M), and a bound on the element count holds whatever the model's own size, which a crafted
file also controls.

External data (``model.onnx.data``) is read only from a plain file inside the model's folder, within that
file's size: a location with ``..``, an absolute path or a symbolic link is refused (path traversal).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import onnx
import torch
from onnx import TensorProto

from ..errors import ModelError
from .limits import ENV_MAX_ELEMENTS, max_elements

DATA_SIZED_OPS = ("ConstantOfShape", "Expand", "Tile", "Range", "Pad", "Resize", "Upsample", "OneHot")


def _too_big(path: Path, what: str, count: int, limit: int) -> ModelError:
    return ModelError(f"{path}: {what} has {count:,} elements, more than the {limit:,} leakaudit allocates for one "
                      f"tensor; check the file comes from a real export, or raise {ENV_MAX_ELEMENTS} if it does")


def _count(dims) -> int:
    return math.prod(int(d) for d in dims)


# ------------------------------------------------------------------------------------------------ external data
def load_external_data(path: Path, model: onnx.ModelProto) -> None:
    """Read the external data of ``model`` (loaded without it) after checking where it comes from."""
    folder = path.resolve().parent
    limit = max_elements()
    for tensor in _external_tensors(model):
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        source = Path(location)
        if not location or source.is_absolute() or ".." in source.parts:
            raise ModelError(f"{path}: initializer {tensor.name!r} reads external data from {location!r}, outside "
                             "the model's folder; keep the weights file next to the model, named relative to it")
        target = folder / source
        if target.is_symlink() or not target.is_file():
            kind = "a symbolic link" if target.is_symlink() else "not a file next to the model"
            raise ModelError(f"{path}: the external data {location!r} of initializer {tensor.name!r} is {kind}; "
                             "copy the .onnx.data file next to the model")
        count = _count(tensor.dims)
        if count > limit:
            raise _too_big(path, f"initializer {tensor.name!r}", count, limit)
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", target.stat().st_size))
        except ValueError as e:
            raise ModelError(f"{path}: initializer {tensor.name!r} has a malformed external-data offset/length; "
                             "re-export the model") from e
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            raise ModelError(f"{path}: initializer {tensor.name!r} reads bytes {offset}..{offset + length} of "
                             f"{location!r}, which has {target.stat().st_size}; the weights file is truncated or "
                             "belongs to another export")
    onnx.external_data_helper.load_external_data_for_model(model, str(folder))


def _external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    return [t for t in onnx.external_data_helper._get_all_tensors(model)  # noqa: SLF001 -- subgraphs included
            if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL]


# ---------------------------------------------------------------------------------------------- graph values
def check_sizes(path: Path, model: onnx.ModelProto, input_shape: tuple[int, ...]) -> list[onnx.NodeProto]:
    """Refuse a graph that would allocate a tensor above ``max_elements()`` (rules in the module docstring);
    ``input_shape`` includes the batch dimension the model will first run at. Returns the data-sized nodes
    whose output size stays unknown: ``guard`` them after conversion."""
    limit = max_elements()
    if _count(input_shape) > limit:
        raise _too_big(path, f"the input of shape {list(input_shape)}", _count(input_shape), limit)
    for init in model.graph.initializer:
        if _count(init.dims) > limit:
            raise _too_big(path, f"initializer {init.name!r}", _count(init.dims), limit)
    inferred = _infer(model, input_shape)
    known: dict[str, list[int] | None] = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        dims = _static_dims(value)
        known[value.name] = dims
        if dims is not None and _count(dims) > limit:
            raise _too_big(path, f"value {value.name!r}", _count(dims), limit)
    return [node for node in model.graph.node
            if node.op_type in DATA_SIZED_OPS and any(known.get(o) is None for o in node.output if o)]


def guard(path: Path, module: torch.nn.Module, nodes: list[onnx.NodeProto]) -> None:
    """Give the converted module of each node a ``SizeGuard`` (names as ``onnx_names`` made them)."""
    modules = dict(module.named_modules())
    for node in nodes:
        name = (f"{node.domain}/" + node.name.replace(".", "/")).lstrip("/")
        target = modules.get(name)
        if target is not None:
            target.register_forward_pre_hook(SizeGuard(str(path), node.op_type, node.name), with_kwargs=True)


class SizeGuard:
    """Forward pre-hook: refuses to run an op whose output would exceed ``max_elements()``.

    The converted modules take the node's ONNX inputs in order (onnx2torch's convention), so the inputs are
    read by position from the bound forward signature; a class rather than a closure so models deep-copy."""

    def __init__(self, path: str, op_type: str, node: str) -> None:
        self.path, self.op_type, self.node = path, op_type, node

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        try:
            bound = inspect.signature(module.forward).bind(*args, **kwargs)
        except TypeError:
            return
        count = _output_size(self.op_type, list(bound.arguments.values()))
        limit = max_elements()
        if count is not None and count > limit:
            raise _too_big(Path(self.path), f"the output of {self.op_type} node {self.node!r}", count, limit)


@dataclass(frozen=True)
class _Operands:
    """A node's inputs, read by position; a missing or non-tensor operand reads as None."""

    inputs: list

    def ints(self, i: int) -> list[int] | None:
        v = self.inputs[i] if i < len(self.inputs) else None
        return [int(x) for x in v.reshape(-1).tolist()] if isinstance(v, torch.Tensor) else None

    def floats(self, i: int) -> list[float] | None:
        v = self.inputs[i] if i < len(self.inputs) else None
        return [float(x) for x in v.reshape(-1).tolist()] if isinstance(v, torch.Tensor) and v.numel() else None

    @property
    def first(self) -> torch.Tensor | None:
        return self.inputs[0] if self.inputs and isinstance(self.inputs[0], torch.Tensor) else None


# A hostile file may give operands of the wrong length: the bounds below then count what pairs up
# (zip(strict=False)), and the converter refuses the node later.

def _expand_size(x: torch.Tensor, ops: _Operands) -> int | None:
    target = ops.ints(1)
    if target is None:
        return None
    dims = list(x.shape)
    rank = max(len(dims), len(target))
    a, b = [1] * (rank - len(dims)) + dims, [1] * (rank - len(target)) + target
    return math.prod(max(p, q) for p, q in zip(a, b, strict=True))


def _tile_size(x: torch.Tensor, ops: _Operands) -> int | None:
    repeats = ops.ints(1)
    if repeats is None:
        return None
    return math.prod(d * max(r, 0) for d, r in zip(x.shape, repeats, strict=False))


def _range_size(x: torch.Tensor, ops: _Operands) -> int | None:
    limits, deltas = ops.floats(1), ops.floats(2)
    if limits is None or deltas is None:
        return None
    start, limit, delta = float(x.reshape(-1)[0]), limits[0], deltas[0]
    return max(math.ceil((limit - start) / delta), 0) if delta else None


def _pad_size(x: torch.Tensor, ops: _Operands) -> int | None:
    pads = ops.ints(1)
    if pads is None:
        return None
    dims = list(x.shape)
    rank = len(dims)
    given_axes = ops.ints(3)
    axes = [a % rank for a in given_axes] if given_axes is not None else list(range(rank))
    k = len(pads) // 2
    for axis, before, after in zip(axes, pads[:k], pads[k:], strict=False):
        dims[axis] += before + after
    return math.prod(max(d, 0) for d in dims)


def _resize_size(x: torch.Tensor, ops: _Operands, *, sizes_at: int | None, scales_at: int) -> int | None:
    sizes = ops.ints(sizes_at) if sizes_at is not None else None
    if sizes:
        return math.prod(sizes)
    scales = ops.floats(scales_at)
    return math.prod(math.floor(d * s) for d, s in zip(x.shape, scales, strict=False)) if scales else None


def _one_hot_size(x: torch.Tensor, ops: _Operands) -> int | None:
    depth = ops.ints(1)
    return x.numel() * depth[0] if depth is not None else None


# op -> the element count of its output, from its first input and the other operands
_OUTPUT_SIZE: dict[str, Callable[[torch.Tensor, _Operands], int | None]] = {
    "Expand": _expand_size,
    "Tile": _tile_size,
    "Range": _range_size,
    "Pad": _pad_size,
    "Resize": partial(_resize_size, sizes_at=3, scales_at=2),
    "Upsample": partial(_resize_size, sizes_at=None, scales_at=1),
    "OneHot": _one_hot_size,
}


def _output_size(op: str, inputs: list) -> int | None:
    ops = _Operands(inputs)
    if op == "ConstantOfShape":  # its only input is the shape, not a tensor of the output's size
        shape = ops.ints(0)
        return math.prod(max(d, 0) for d in shape) if shape is not None else None
    size = _OUTPUT_SIZE.get(op)
    x = ops.first
    return size(x, ops) if size is not None and x is not None else None


def _infer(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Shape inference on a copy without weights' data (only dims matter) whose input has ``input_shape``."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    # What the file says about its own values is not evidence: inference recomputes every shape.
    del skeleton.graph.value_info[:]
    for value in skeleton.graph.output:
        value.type.tensor_type.ClearField("shape")
    initializers = {i.name for i in skeleton.graph.initializer}
    for init in skeleton.graph.initializer:
        if init.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16) \
                and _count(init.dims) > 64:
            # Only integer initializers (shapes, axes, pads) feed data propagation; a big float one is a weight.
            _clear_data(init)
    for value in skeleton.graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == len(input_shape):
            for dim, size in zip(dims, input_shape, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        return onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:  # noqa: BLE001 -- inference fails on odd but convertible graphs: check the file as is
        return skeleton


def _clear_data(init: TensorProto) -> None:
    for field in ("raw_data", "float_data", "double_data", "int32_data"):
        init.ClearField(field)
    # Shape inference reads dims only, but a tensor without data is invalid: turn it into an input.
    init.data_location = TensorProto.DEFAULT


def _static_dims(value: onnx.ValueInfoProto) -> list[int] | None:
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]
