"""Forward execution order of a model: which leaf modules run, in what order, and where each trainable
parameter is first used.

Everything else in detection speaks in these positions: a dropout layer's ``position`` and a
bottleneck's ``params_before`` / ``params_after`` split are indices into :attr:`Trace.leaves`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..errors import ModelError, setting_ref
from ..models.interface import LoadedModel

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
BATCH_SIZE = setting_ref("batch_size")
INPUT_SHAPE = setting_ref("input_shape")


@dataclass(frozen=True)
class LeafCall:
    name: str  # module path ("" never: the root is a leaf only when it has no children)
    type: str  # class name
    output_shape: tuple[int, ...] | None  # of the first call, batch dimension included


@dataclass(frozen=True)
class Trace:
    leaves: tuple[LeafCall, ...]  # leaf modules in the order of their first call
    module_position: dict[str, int]  # every module that ran (leaf or not) -> index of its first leaf call
    param_position: dict[str, int]  # trainable parameter name -> position of its first use
    param_owner: dict[str, str]  # trainable parameter name -> the module it is listed under (first user)
    unused_params: tuple[str, ...]  # trainable parameters no forward step touched

    def position_of(self, module_name: str) -> int:
        return self.module_position.get(module_name, len(self.leaves))


def _model_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


def example_input(model: LoadedModel, batch: int, *, random: bool, seed: int = 1234) -> torch.Tensor:
    device, dtype = _model_device_dtype(model.module)
    # An ONNX export without a dynamic batch axis bakes its batch size into Reshape targets: use that one.
    fixed = getattr(model.onnx, "batch_size", None) if model.onnx is not None else None
    shape = (fixed or batch, *model.input_shape)
    if not random:
        return torch.zeros(shape, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)  # CPU generator: the same input on every device
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


def forward_or_fail(model: LoadedModel, x: torch.Tensor) -> object:
    try:
        with warnings.catch_warnings():
            # onnx2torch's converted ops warn about torch deprecations on every call: not the user's concern
            warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch\.")
            return model.module(x)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- user code: even sys.exit in forward is an input error
        if "more than 1 value per channel" in str(e):
            raise ModelError(f"{model.path}: a layer normalises with batch statistics and cannot run on a batch of "
                             f"{len(x)} ({str(e).splitlines()[0][:160]}); give {BATCH_SIZE} 2 or more, or make it "
                             "use running statistics in eval mode") from e
        shape = ",".join(str(s) for s in model.input_shape)
        raise ModelError(
            f"{model.path}: forward pass on input shape {shape} failed ({type(e).__name__}: {e}); "
            f"pass the model's input shape with {INPUT_SHAPE} C,H,W"
        ) from e


def _fx_param_users(root: nn.Module) -> dict[str, str]:
    """Parameters a ``torch.fx.GraphModule`` reads through ``get_attr`` (onnx2torch keeps graph initializers
    in a container module that is never called, so no hook sees them) -> the first module called with
    them, or, when a function consumes them, the next module called after that point in the graph."""
    users: dict[str, str] = {}
    params = {n for n, _ in root.named_parameters()}
    for prefix, sub in root.named_modules():
        if not isinstance(sub, fx.GraphModule):
            continue
        dot = f"{prefix}." if prefix else ""
        nodes = list(sub.graph.nodes)
        for i, node in enumerate(nodes):
            if node.op != "get_attr" or f"{dot}{node.target}" not in params:
                continue
            callee = next((f"{dot}{n.target}" for n in nodes[i:] if n.op == "call_module"
                           and any(u is n for u in node.users)), None)
            if callee is None:
                callee = next((f"{dot}{n.target}" for n in nodes[i:] if n.op == "call_module"), None)
            if callee is not None:
                users.setdefault(f"{dot}{node.target}", callee)
    return users


def trace(model: LoadedModel) -> Trace:
    """One eval-mode forward pass on zeros of the input shape, with a pre-hook on every module.

    Eval mode keeps BatchNorm statistics and random draws out of it. A module that only runs in train mode
    (``if self.training: ...``) is therefore missing here and its parameters are reported as unused.
    """
    module = model.module
    names = {m: n for n, m in module.named_modules()}
    leaves: list[LeafCall] = []
    first: dict[str, int] = {}
    leaf_index: dict[str, int] = {}

    def pre_hook(mod: nn.Module, _args: object) -> None:
        name = names[mod]
        first.setdefault(name, len(leaves))
        if not any(True for _ in mod.children()) and name not in leaf_index:
            leaf_index[name] = len(leaves)
            leaves.append(LeafCall(name, type(mod).__name__, None))

    def post_hook(mod: nn.Module, _args: object, out: object) -> None:
        name = names[mod]
        i = leaf_index.get(name)
        if i is not None and leaves[i].output_shape is None and isinstance(out, torch.Tensor):
            leaves[i] = LeafCall(name, leaves[i].type, tuple(out.shape))

    handles = []
    for m in names:
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        x = example_input(model, 1, random=False)
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        # A model may draw random numbers even in eval mode; the caller's random stream must not move.
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            forward_or_fail(model, x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode

    param_position: dict[str, int] = {}
    param_owner: dict[str, str] = {}
    fx_users = _fx_param_users(module)
    unused: list[str] = []
    for pname, p in module.named_parameters():
        if not p.requires_grad:
            continue
        owner = fx_users.get(pname, pname.rpartition(".")[0])
        if owner in first:
            param_position[pname] = first[owner]
            param_owner[pname] = owner
        else:
            unused.append(pname)
    return Trace(tuple(leaves), first, param_position, param_owner, tuple(unused))
