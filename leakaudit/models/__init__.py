"""Loading the user's model: ONNX, or safetensors with an architecture."""

from .interface import LoadedModel, OnnxGraphInfo
from .layers import MaskableDropout, VariationalBottleneck
from .load import load_model
from .safetensors_loader import save_safetensors
from .zoo import ARCHITECTURES, create_model

__all__ = ["ARCHITECTURES", "LoadedModel", "MaskableDropout", "OnnxGraphInfo", "OnnxRandomOp", "VariationalBottleneck",
           "create_model", "load_model", "save_safetensors"]


def __getattr__(name: str) -> object:
    # Importing onnx_converters imports onnx2torch (and torchvision): only when asked for.
    if name == "OnnxRandomOp":
        from .onnx_converters import OnnxRandomOp
        return OnnxRandomOp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
