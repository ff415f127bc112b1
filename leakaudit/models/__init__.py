"""Loading the user's model: ONNX, or safetensors with an architecture."""

from .interface import LoadedModel, OnnxGraphInfo
from .layers import MaskableDropout, VariationalBottleneck
from .zoo import ARCHITECTURES, create_model

__all__ = ["ARCHITECTURES", "LoadedModel", "MaskableDropout", "OnnxGraphInfo", "VariationalBottleneck",
           "create_model"]
