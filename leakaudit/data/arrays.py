"""Sample arrays: ``.npz`` / ``.npy`` (numpy) and ``.safetensors``, holding ``x`` and ``y``.

``x``: uint8 0-255 or floats in [0, 1], laid out NCHW, NHWC, NHW (grey) or (N, features).
``y``: integer class labels (N,), or one-hot rows (N, classes). A bare ``.npy`` holds ``x`` only and so has no
labels: save ``x`` and ``y`` together in an ``.npz`` or ``.safetensors`` instead.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

ARRAY_EXTENSIONS = (".npz", ".npy", ".safetensors")
_SAVE_HINT = "save them with numpy.savez(path, x=x, y=y) or safetensors with tensors 'x' and 'y'"


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path), None
    if suffix == ".npz":
        return _pick(path, _read_npz(path))
    return _pick(path, _read_safetensors(path))


def _read_npy(path: Path) -> np.ndarray:
    with path.open("rb") as f:
        if f.read(6) != b"\x93NUMPY":  # numpy would otherwise try to unpickle any other file
            raise DataError(f"{path}: cannot read the .npy file (no numpy header); {_SAVE_HINT}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle, which can run code: refuse them
        raise DataError(f"{path}: not a plain numeric array ({e}); {_SAVE_HINT}") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the .npy file ({e}); {_SAVE_HINT}") from e


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # numpy would otherwise try to unpickle any other file
        raise DataError(f"{path}: cannot read the .npz file (not a zip of .npy arrays); {_SAVE_HINT}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        raise DataError(f"{path}: holds a non-numeric array ({e}); {_SAVE_HINT}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the .npz file ({e}); {_SAVE_HINT}") from e


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: cannot read the .safetensors file ({e}); {_SAVE_HINT}") from e
    out = {}
    for k, t in tensors.items():
        # bfloat16/float16 have no exact numpy twin everywhere: widen floats to float32
        out[k] = (t.float() if t.is_floating_point() else t).numpy()
    return out


def _pick(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    if "x" not in arrays:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(f"{path}: no array named 'x' (found {found}); {_SAVE_HINT}")
    return arrays["x"], arrays.get("y")


def check_labels(path: Path | str, y: np.ndarray | None, n: int, num_classes: int) -> np.ndarray:
    """Integer labels (N,) in [0, num_classes), from class numbers or one-hot rows."""
    if y is None:
        raise DataError(f"{path}: has no labels 'y'; {_SAVE_HINT}")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and y.shape[0] == n and _one_hot(y):
        y = y.argmax(1)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: labels 'y' have shape {tuple(y.shape)} for {n} samples; give one class "
                        f"number per sample, shape ({n},)")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{path}: labels 'y' have dtype {y.dtype}; use integer class numbers")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{path}: labels 'y' hold non-integer values; use integer class numbers")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: label {y[i]:g} of sample {i} is out of range for a model with {num_classes} "
                        f"classes; labels must be 0..{num_classes - 1} (or pass the right --num-classes)")
    return y.astype(np.int64)


def _one_hot(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1))
