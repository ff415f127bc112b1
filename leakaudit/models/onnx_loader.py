"""ONNX files -> torch modules: read the graph's facts, convert with onnx2torch, make every weight trainable.

Which initializers are *weights* (what a client sends gradients for, ``weight_initializers``): float
initializers of rank >= 1 that feed at least one node input that takes learnable data. Left out:

- rank-0 floats: exporters inline hyper-parameters as scalars (dropout ratio, attention scale, the 1.0 of
  softplus); a learnable scalar would be missed -- no zoo or common architecture has one;
- non-float initializers (shapes, axes, indices);
- inputs that are statistics or settings, not learnable data (``NON_WEIGHT_INPUTS``): BatchNormalization
  running mean/var, Dropout ratio/training_mode, Clip bounds, Pad pads/value, Resize roi/scales, ...

onnx2torch folds Conv/Gemm/BatchNormalization/LayerNormalization weights into torch layers (parameters), but
keeps every other initializer (e.g. the weight of a Linear without bias, exported as Transpose + MatMul) as a
buffer of its ``initializers`` container. ``promote_weights`` turns those buffers into ``nn.Parameter``\\ s
under the ``weights`` sub-module (one parameter per initializer, even where onnx2torch copied it per use).
Before that, ``untie_weights`` gives every use of a weight its own initializer (exporters merge
equal-valued initializers; see there).

Which exporter (checked with torch 2.14, where ``dynamo=True`` is the default): both load. For an audit
file prefer ``torch.onnx.export(model, x, path, dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
do_constant_folding=False)``: the TorchScript exporter keeps ``Dropout`` (with its ratio) and
``BatchNormalization`` (training mode) nodes and the torch weights one to one. The dynamo exporter keeps
Dropout and random nodes too, but its optimiser folds BatchNorm into the preceding Conv even in training
mode (batch statistics are lost) and pre-computes parameter expressions even without constant folding
(transposed weights, a ViT's class token expanded to the export batch size), so its file trains other
weights than the torch module did.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto, numpy_helper
from torch import fx, nn

from ..errors import InputError, LeakauditError, ModelError, setting_ref
from . import onnx_converters  # noqa: F401 -- registers the converters onnx2torch lacks
from .interface import OnnxGraphInfo
from .onnx_limits import check_sizes, guard, load_external_data
from .onnx_names import safe_names
from .onnx_patterns import fuse_decomposed_dropout
from .onnx_converters import missing_converters

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
ARCH = setting_ref("arch")
INPUT_SHAPE = setting_ref("input_shape")
NUM_CLASSES = setting_ref("num_classes")

RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli")
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
NON_WEIGHT_INPUTS: dict[str, frozenset[int]] = {
    "BatchNormalization": frozenset({3, 4}),
    "Dropout": frozenset({1, 2}),
    "Clip": frozenset({1, 2}),
    "Pad": frozenset({1, 2, 3}),
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Range": frozenset({0, 1, 2}),
    "Reshape": frozenset({1}),
    "Expand": frozenset({1}),
    "Tile": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}),
    "ConstantOfShape": frozenset({0}),
}
# Outputs beyond the first that training-mode exports add (the dropout mask; BatchNorm's running stats)
# and that onnx2torch cannot produce; the loader drops them when nothing reads them.
_STRIPPABLE_OUTPUTS = ("Dropout", "BatchNormalization")


@dataclass(frozen=True)
class OnnxParts:
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    info: OnnxGraphInfo


def read_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
        bad = _not_utf8(model)
        if bad:
            raise ModelError(f"{path}: the ONNX file holds a {bad} that is not valid UTF-8; re-export the model, or "
                             "rename its nodes and values to text (onnx.load, edit, onnx.save)")
        load_external_data(path, model)
    except LeakauditError:
        raise
    except Exception as e:  # noqa: BLE001 -- protobuf raises various errors on garbage
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {_first_line(e)}); "
                         "check the file is complete or re-export it with torch.onnx.export") from e
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"{path}: the ONNX graph is empty (no nodes or outputs); "
                         "check the file is complete or re-export it with torch.onnx.export")
    return model


def _not_utf8(model: onnx.ModelProto) -> str:
    """The first string field (node name, value name, op type...) that protobuf could not decode as UTF-8 and
    hands over as bytes ("" when none): every later step (renaming, onnx2torch, the report) expects text. The
    walk is iterative: a graph's nesting is the file's to choose."""
    stack: list[tuple[Any, str]] = [(model, "model")]
    while stack:
        message, where = stack.pop()
        for field, value in message.ListFields():
            if field.type == field.TYPE_STRING:
                if any(isinstance(v, bytes) for v in ([value] if isinstance(value, (str, bytes)) else value)):
                    return f"{where} {field.name}".replace("_", " ")
            elif field.type == field.TYPE_MESSAGE:
                owner = field.message_type.name.removesuffix("Proto").lower()
                stack.extend((v, owner) for v in ([value] if hasattr(value, "ListFields") else value))
    return ""


def load_onnx(path: Path, *, input_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None) -> OnnxParts:
    model = fuse_decomposed_dropout(read_onnx(path))  # before graph_info: detection sees the Dropout node
    safe, renamed = safe_names(model)
    info = replace(graph_info(model), renamed=tuple(renamed.items()))
    shape = _resolve_input_shape(path, model, input_shape)
    classes = _resolve_num_classes(path, model, num_classes)
    unbounded = check_sizes(path, safe, (info.batch_size or 2, *shape))
    module = convert(path, safe)
    guard(path, module, unbounded)
    _run_once(path, module, (info.batch_size or 2, *shape), classes)
    return OnnxParts(module=module, input_shape=shape, num_classes=classes, info=info)


def _run_once(path: Path, module: nn.Module, shape: tuple[int, ...], classes: int) -> None:
    """A conversion that only fails at run time should fail here, with the file's name, not mid-audit."""
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = module(torch.zeros(shape))
    except LeakauditError:
        raise
    except Exception as e:  # noqa: BLE001 -- converted user graph: anything can go wrong
        raise ModelError(f"{path}: the converted model fails on an input of shape {list(shape)} "
                         f"({type(e).__name__}: {_first_line(e)}); check {INPUT_SHAPE} or re-export the model "
                         "(torch.onnx.export, opset 17-21)") from e
    finally:
        module.train()
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != classes:
        got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{path}: the converted model returns {got}, expected (batch, {classes}) class logits; "
                         "re-export a model whose forward returns the logits only")


# --------------------------------------------------------------------------------------------- graph facts
def opset_of(model: onnx.ModelProto) -> dict[str, int]:
    versions = {o.domain: o.version for o in model.opset_import}
    if "ai.onnx" in versions and "" not in versions:
        versions[""] = versions["ai.onnx"]
    return versions


def graph_info(model: onnx.ModelProto) -> OnnxGraphInfo:
    nodes = list(model.graph.node)
    constants = _constant_values(model)
    names = _node_names(nodes)
    named = list(zip(names, nodes, strict=True))
    dropout = tuple((name, _ratio(n, constants)) for name, n in named if n.op_type == "Dropout")
    random = tuple((name, n.op_type) for name, n in named if n.op_type in RANDOM_OPS)
    producer = f"{model.producer_name} {model.producer_version}".strip()
    inputs = _graph_inputs(model)
    fold = _folded_batchnorm(nodes)
    batch = None
    if len(inputs) == 1 and inputs[0].type.tensor_type.shape.dim:
        first = inputs[0].type.tensor_type.shape.dim[0]
        batch = first.dim_value if first.HasField("dim_value") else None
    return OnnxGraphInfo(
        opset=opset_of(model).get("", 0),
        producer=producer,
        op_types=tuple(n.op_type for n in nodes),
        dropout_nodes=dropout,
        random_nodes=random,
        looks_eval_exported=not dropout and not random and not _has_training_traces(nodes),
        batch_size=batch,
        folded_batchnorm=fold[0],
        folded_batchnorm_count=fold[1],
        dropped_attention_dropout=_dropped_attention_dropout(nodes),
    )


def _node_names(nodes: list[onnx.NodeProto]) -> list[str]:
    """Each node's name; unnamed nodes get the name onnx2torch gives their module (op type + counter)."""
    from onnx2torch.onnx_graph import OnnxGraph

    counters: dict[str, int] = {}
    names = []
    for node in nodes:
        generated = OnnxGraph.generate_node_name(node)
        count = counters.get(generated, 0)
        counters[generated] = count + 1
        names.append(node.name or (generated + (f"_{count}" if count else "")))
    return names


# The onnxscript rewriter that torch's dynamo exporter runs records its rules in each rewritten node's metadata;
# the rule that merges BatchNorm into the preceding Conv, and the name it gives the new Conv ("node_Conv_<n>"
# where a Conv exported as written is "node_conv2d"), measured with torch 2.14 / onnxscript.
_FOLD_RULE = "FuseBatchNormIntoConv"
_REWRITTEN_CONV = re.compile(r"node_Conv_\d+")


def _folded_batchnorm(nodes: list[onnx.NodeProto]) -> tuple[str, int]:
    """("recorded" | "suspected" | "", how many Conv nodes) for BatchNorm folded away by the exporter.

    A file that still has BatchNormalization nodes kept its BatchNorm. Otherwise the rewriter's metadata is
    proof; without metadata (an optimiser stripped it) the rewriter's Conv names are only a hint: it also
    renames a Conv whose all-zero bias it dropped, which a model without BatchNorm can have."""
    if any(n.op_type == "BatchNormalization" for n in nodes):
        return "", 0
    convs = [n for n in nodes if n.op_type == "Conv"]
    recorded = sum(any(p.key.endswith("rewriter.rule_name") and _FOLD_RULE in p.value for p in n.metadata_props)
                   for n in convs)
    if recorded:
        return "recorded", recorded
    if any(n.metadata_props for n in nodes):
        return "", 0  # the rewriter's record is there and names no fold
    renamed = sum(bool(_REWRITTEN_CONV.fullmatch(n.name)) for n in convs)
    return ("suspected", renamed) if renamed else ("", 0)


_FX_NODE = "pkg.torch.onnx.fx_node"  # the dynamo exporter's record of the torch op each node came from
_SDPA_CALL = re.compile(r"aten\.scaled_dot_product_attention\.\w+\]\(args = \((.*)\), kwargs = \{(.*)\}\)")
_SDPA_DROPOUT_KW = re.compile(r"dropout_p['\"]?\s*[:=]\s*([0-9.eE+-]+)")


def _dropped_attention_dropout(nodes: list[onnx.NodeProto]) -> tuple[float, ...]:
    """Rates of the attention calls whose dropout the export lost, one per call (see OnnxGraphInfo)."""
    calls: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        record = next((p.value for p in n.metadata_props if p.key == _FX_NODE), "")
        if "scaled_dot_product_attention" in record:
            calls.setdefault(record, []).append(n)
    dropped = []
    for record, members in calls.items():
        rate = _sdpa_dropout_p(record)
        if rate and not any(m.op_type in (*RANDOM_OPS, "Dropout") for m in members):
            dropped.append(rate)
    return tuple(dropped)


def _sdpa_dropout_p(record: str) -> float:
    """dropout_p of a recorded ``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, ...)`` call."""
    match = _SDPA_CALL.search(record)
    if match is None:
        return 0.0
    args = [a.strip() for a in match.group(1).split(",")]
    keyword = _SDPA_DROPOUT_KW.search(match.group(2))
    text = keyword.group(1) if keyword else (args[4] if len(args) > 4 else "0")
    try:
        return max(float(text), 0.0)
    except ValueError:
        return 0.0


def _has_training_traces(nodes: list[onnx.NodeProto]) -> bool:
    """BatchNormalization exported in training mode (attribute or running-stat outputs)."""
    for n in nodes:
        if n.op_type == "BatchNormalization":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if attrs.get("training_mode", 0) or len([o for o in n.output if o]) > 1:
                return True
    return False


def _constant_values(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    values = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in model.graph.initializer
              if init.data_type in FLOAT_TYPES and not init.dims}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = torch.from_numpy(numpy_helper.to_array(a.t).copy())
                elif a.name == "value_float":
                    values[n.output[0]] = torch.tensor(a.f)
    return values


def _ratio(node: onnx.NodeProto, constants: dict[str, torch.Tensor]) -> float:
    if len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        return round(float(value.reshape(-1)[0]), 6) if value is not None else float("nan")
    for a in node.attribute:
        if a.name == "ratio":
            return round(float(a.f), 6)  # stored as float32: 0.2 reads back as 0.20000000298
    return 0.5


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _resolve_input_shape(path: Path, model: onnx.ModelProto, given: tuple[int, ...] | None) -> tuple[int, ...]:
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(f"{path}: the graph has {len(inputs)} inputs ({names}); leakaudit audits models with one "
                         "image/feature input: re-export with a single input")
    if not inputs[0].type.tensor_type.HasField("shape"):  # rank unknown: only the user can tell
        dims: list[int | None] = [None]
        if given is not None:
            return tuple(int(d) for d in given)
    else:
        dims = _dims(inputs[0])[1:]  # the batch dimension (often symbolic) is not part of a sample's shape
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given, strict=True)):
            raise InputError(f"{INPUT_SHAPE} {_fmt(given)}: does not match the input "
                             f"{_fmt(dims)} of {path}; drop the option or re-export the model")
        return given
    if not dims or any(d is None for d in dims):
        raise InputError(f"{path}: the graph's input shape {_fmt(dims)} has symbolic dimensions; "
                         f"give {INPUT_SHAPE} C,H,W (one sample, no batch dimension)")
    return tuple(int(d) for d in dims if d is not None)  # none is None: checked above


def _resolve_num_classes(path: Path, model: onnx.ModelProto, given: int | None) -> int:
    if len(model.graph.output) != 1:
        names = ", ".join(o.name for o in model.graph.output)
        raise ModelError(f"{path}: the graph has {len(model.graph.output)} outputs ({names}); leakaudit needs one "
                         "output of class logits: re-export a model whose forward returns the logits only")
    dims = _dims(model.graph.output[0])
    if len(dims) not in (0, 2):
        raise ModelError(f"{path}: the graph's output has shape {_fmt(dims)}; leakaudit needs (batch, classes) "
                         "logits: re-export a model whose forward returns them")
    last = dims[-1] if dims else None
    if given is not None:
        if last is not None and last != given:
            raise InputError(f"{NUM_CLASSES} {given}: the output of {path} has {last} classes; "
                             "drop the option or re-export the model")
        return int(given)
    if last is None:
        raise InputError(f"{path}: the number of classes (last output dimension) is symbolic; "
                         f"give {NUM_CLASSES} N")
    return int(last)


def _fmt(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims) or "()"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------- conversion
def convert(path: Path, model: onnx.ModelProto) -> fx.GraphModule:
    model, _ = safe_names(model)  # before anything reads a name: onnx2torch and torch.fx paste them into code
    model = untie_weights(_strip_unused_outputs(model))
    opset = opset_of(model)
    missing = missing_converters([(n.domain if n.domain != "ai.onnx" else "", n.op_type) for n in model.graph.node],
                                 opset)
    if missing:
        ops = f"op {missing[0]!r} has" if len(missing) == 1 else f"ops {', '.join(repr(m) for m in missing)} have"
        raise ModelError(f"{path}: ONNX {ops} no converter (opset {opset.get('', '?')}); re-export the model "
                         "without it (e.g. at another opset) or save the weights as .safetensors and load them "
                         f"with {ARCH}")
    from onnx2torch import convert as onnx2torch_convert

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch_convert(model, attach_onnx_mapping=True)
    except Exception as e:  # noqa: BLE001 -- onnx2torch raises anything from NotImplementedError to KeyError
        raise ModelError(f"{path}: onnx2torch cannot convert the graph ({type(e).__name__}: {_first_line(e)}); "
                         "re-export the model (e.g. torch.onnx.export at opset 17-21) or save the weights as "
                         f".safetensors and load them with {ARCH}") from e
    promote_weights(module, model)
    return module


def _strip_unused_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    model = _copy(model)
    for node in model.graph.node:
        if node.op_type in _STRIPPABLE_OUTPUTS and len(node.output) > 1:
            keep = list(node.output)
            while len(keep) > 1 and keep[-1] not in used:
                keep.pop()
            if len(keep) != len(node.output):
                del node.output[:]
                node.output.extend(keep)
        if node.op_type == "BatchNormalization" and len(node.output) == 1:
            # ONNX requires the running-stat outputs in training mode; the converted module follows torch's
            # train()/eval() instead, so the flag is dropped with them (graph_info has already seen it).
            for attr in list(node.attribute):
                if attr.name == "training_mode":
                    node.attribute.remove(attr)
    return model


def untie_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """One initializer per use of a weight (copy of ``model``).

    Exporters merge initializers with equal values: the TorchScript exporter keeps one and feeds the others
    through ``Identity`` nodes, the dynamo exporter shares it directly. Freshly initialised models hit this
    all the time (every LayerNorm/BatchNorm scale is ones), but in the torch model they were separate
    weights with separate gradients, so every use gets its own copy here. (Weights genuinely tied across
    layers are split too; image classifiers rarely tie weights.)
    """
    model = _copy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    # Identity(initializer) -> an initializer under the Identity's output name.
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input and node.input[0] in inits and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = copy
            graph.node.remove(node)
    weights = set(weight_initializers(model))
    seen: dict[str, int] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name not in weights or index in NON_WEIGHT_INPUTS.get(node.op_type, ()):
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 1:
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}__use{seen[name]}"
            graph.initializer.append(copy)
            node.input[index] = copy.name
    # Names listed as graph inputs too (IR < 4 files) stay, or they would turn into real inputs.
    used = {name for n in graph.node for name in n.input} | outputs | {i.name for i in graph.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def weight_initializers(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the initializers that are trainable weights (rule in the module docstring)."""
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    weights = {}
    for init in model.graph.initializer:
        if init.data_type not in FLOAT_TYPES or not init.dims:
            continue
        if any(index not in NON_WEIGHT_INPUTS.get(op, ()) for op, index in uses.get(init.name, ())):
            weights[init.name] = tuple(init.dims)
    return weights


def promote_weights(module: fx.GraphModule, model: onnx.ModelProto) -> None:
    weights = weight_initializers(model)
    container = nn.Module()
    created: dict[str, str] = {}  # initializer name -> parameter attribute in ``container``
    for node in list(module.graph.nodes):
        if node.op != "get_attr" or not str(node.target).startswith("initializers."):
            continue
        names = {_initializer_name(module, node, user) for user in node.users}
        names.discard(None)
        if len(names) != 1:
            continue
        (name,) = names
        if name not in weights:
            continue
        if name not in created:
            buffer = module.get_buffer(str(node.target))
            attr = _unique_attr(container, name)
            container.register_parameter(attr, nn.Parameter(buffer.detach().clone()))
            created[name] = attr
        delattr(module.initializers, str(node.target).split(".", 1)[1])
        node.target = f"weights.{created[name]}"
    if created:
        module.add_module("weights", container)
        module.graph.lint()
        module.recompile()


def _initializer_name(module: fx.GraphModule, node: fx.Node, user: fx.Node) -> str | None:
    """The ONNX value name that ``node`` (a get_attr of an initializer buffer) stands for in ``user``."""
    if user.op != "call_module":
        return None
    mapping = getattr(module.get_submodule(str(user.target)), "onnx_mapping", None)
    if mapping is None:
        return None
    for index, arg in enumerate(user.args):
        if arg is node:
            return mapping.inputs[index] if index < len(mapping.inputs) else None
    params = list(inspect.signature(module.get_submodule(str(user.target)).forward).parameters)
    for key, arg in user.kwargs.items():
        if arg is node and key in params:
            index = params.index(key)
            return mapping.inputs[index] if index < len(mapping.inputs) else None
    return None


def _unique_attr(container: nn.Module, name: str) -> str:
    base = re.sub(r"\W", "_", name) or "weight"
    if base[0].isdigit():
        base = f"w_{base}"
    attr, i = base, 1
    while hasattr(container, attr):
        attr, i = f"{base}_{i}", i + 1
    return attr


def trainable_weights(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight the loaded module trains: ``weight_initializers`` after ``untie_weights``."""
    return weight_initializers(untie_weights(model))

