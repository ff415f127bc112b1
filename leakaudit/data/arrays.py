"""Sample arrays: ``.npz`` / ``.npy`` (numpy) and ``.safetensors``, holding ``x`` and ``y``.

``x``: uint8 0-255 or floats in [0, 1], laid out NCHW, NHWC, NHW (grey) or (N, features), in the model's
input shape (arrays are never resized). ``y``: integer class labels (N,), or one-hot rows (N, classes). A bare
``.npy`` holds ``x`` only and so has no labels: save ``x`` and ``y`` together in an ``.npz`` or
``.safetensors`` instead.

A small file must not make leakaudit allocate gigabytes (a 3 MB ``.npz`` of zeros inflates to 10 GB), so
each array is checked on its header before any data is read: numeric dtype, the model's sample shape, a
declared size the file can hold. Then only the samples the audit uses (``limit``, the batch size) are read
and inflated, at most ``MAX_READ_BYTES`` per array; the rest of the file is never decompressed.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np

from ..errors import DataError, setting_ref

ARRAY_EXTENSIONS = (".npz", ".npy", ".safetensors")
MAX_READ_BYTES = 1 << 30  # per array, of the samples used: a batch of 64 ImageNet-size float32 images is 38 MB
_SAVE_HINT = "save them with numpy.savez(path, x=x, y=y) or safetensors with tensors 'x' and 'y'"
_ST_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
             "U64": 8, "I64": 8, "F64": 8}

# Checks the declared shape of one sample of 'x' (no batch axis) before any data is read; raises DataError.
ShapeCheck = Callable[[tuple[int, ...]], object]


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


def read_arrays(path: Path, check_sample: ShapeCheck, limit: int | None = None) -> tuple[np.ndarray,
                                                                                            np.ndarray | None]:
    """The first ``limit`` samples of ``x`` and their labels ``y`` (None for a bare .npy)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, check_sample, limit), None
    if suffix == ".npz":
        return _read_npz(path, check_sample, limit)
    return _read_safetensors(path, check_sample, limit)


def _read_npy(path: Path, check_sample: ShapeCheck, limit: int | None) -> np.ndarray:
    try:
        with path.open("rb") as f:
            header = _npy_header(path, f, "x", ".npy")
            _check_x(path, header.shape, check_sample)
            return _read_rows(path, f, "x", header, _rows(header, limit), os.fstat(f.fileno()).st_size - f.tell())
    except OSError as e:
        raise DataError(f"{path}: cannot read the .npy file ({e}); {_SAVE_HINT}") from e


def _read_npz(path: Path, check_sample: ShapeCheck, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    if not zipfile.is_zipfile(path):  # numpy would otherwise try to unpickle any other file
        raise DataError(f"{path}: cannot read the .npz file (not a zip of .npy arrays); {_SAVE_HINT}")
    try:
        with zipfile.ZipFile(path) as z:
            members = {(n[:-4] if n.endswith(".npy") else n): z.getinfo(n) for n in z.namelist()}
            if "x" not in members:
                _no_x(path, members)
            with z.open(members["x"]) as f:
                hx = _npy_header(path, f, "x", ".npz")
                _check_x(path, hx.shape, check_sample)
                rows = _rows(hx, limit)
                x = _read_rows(path, f, "x", hx, rows, members["x"].file_size - f.tell())
            if "y" not in members:
                return x, None
            with z.open(members["y"]) as f:
                hy = _npy_header(path, f, "y", ".npz")
                _check_y(path, hy.shape, hx.shape[0])
                return x, _read_rows(path, f, "y", hy, rows, members["y"].file_size - f.tell())
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise DataError(f"{path}: cannot read the .npz file ({e}); {_SAVE_HINT}") from e


def _read_safetensors(path: Path, check_sample: ShapeCheck, limit: int | None) -> tuple[np.ndarray,
                                                                                         np.ndarray | None]:
    from safetensors import SafetensorError, safe_open

    try:
        # safe_open validates the header (offsets inside the file) and maps the file; slices copy only their rows
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if "x" not in keys:
                _no_x(path, keys)
            sx = f.get_slice("x")
            hx = _st_header(path, "x", sx)
            _check_x(path, hx.shape, check_sample)
            rows = _rows(hx, limit)
            _check_read_size(path, "x", hx, rows)
            x = _st_numpy(sx[:rows])
            if "y" not in keys:
                return x, None
            sy = f.get_slice("y")
            hy = _st_header(path, "y", sy)
            _check_y(path, hy.shape, hx.shape[0])
            _check_read_size(path, "y", hy, rows)
            return x, _st_numpy(sy[:rows])
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise DataError(f"{path}: cannot read the .safetensors file ({e}); {_SAVE_HINT}") from e


def _npy_header(path: Path, f: IO[bytes], name: str, kind: str) -> _Header:
    """The .npy header of ``f`` (its stream left at the data), refusing anything but plain numeric arrays."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)  # numpy would otherwise try to unpickle any other file
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)  # bounded: numpy refuses headers over 10 000 bytes
    except ValueError as e:
        raise DataError(f"{path}: cannot read the {kind} file (array '{name}' has no valid numpy header: {e}); "
                        f"{_SAVE_HINT}") from e
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.shape:
        # object arrays need pickle, which can run code; structured/complex/text dtypes are not pixels
        raise DataError(f"{path}: '{name}' is not a plain numeric array (dtype {dtype}); {_SAVE_HINT}")
    return _Header(tuple(int(s) for s in shape), dtype, bool(fortran))


def _st_header(path: Path, name: str, sl) -> _Header:
    kind = sl.get_dtype()
    if kind not in _ST_BYTES:
        raise DataError(f"{path}: '{name}' has dtype {kind}; use uint8 0-255 or floats in [0, 1] (float16/32/64)")
    return _Header(tuple(int(s) for s in sl.get_shape()), np.dtype(f"V{_ST_BYTES[kind]}"), False)


def _st_numpy(t) -> np.ndarray:
    # bfloat16/float16 have no exact numpy twin everywhere: widen floats to float32
    return (t.float() if t.is_floating_point() else t).numpy()


def _check_x(path: Path, shape: tuple[int, ...], check_sample: ShapeCheck) -> None:
    if len(shape) == 0 or shape[0] == 0:
        raise DataError(f"{path}: holds no samples (x has shape {shape}); add at least one sample")
    check_sample(shape[1:])


def _check_y(path: Path, shape: tuple[int, ...], n: int) -> None:
    if len(shape) not in (1, 2) or shape[0] != n:
        raise DataError(f"{path}: labels 'y' have shape {shape} for {n} samples; give one class number per "
                        f"sample, shape ({n},)")


def _rows(header: _Header, limit: int | None) -> int:
    return header.shape[0] if limit is None else min(limit, header.shape[0])


def _check_read_size(path: Path, name: str, header: _Header, rows: int) -> int:
    """Bytes of the first ``rows`` samples; refused above MAX_READ_BYTES."""
    nbytes = rows * math.prod(header.shape[1:]) * header.dtype.itemsize
    if nbytes > MAX_READ_BYTES:
        raise DataError(f"{path}: the {rows} sample(s) of '{name}' to read take {_size(nbytes)}, more than the "
                        f"{_size(MAX_READ_BYTES)} leakaudit reads from one array; use fewer samples "
                        f"({setting_ref('batch_size')}) or smaller ones (the model's input size)")
    return nbytes


def _read_rows(path: Path, f: IO[bytes], name: str, header: _Header, rows: int, available: int) -> np.ndarray:
    """The first ``rows`` samples of the array whose data starts at ``f``'s position (``available`` bytes)."""
    declared = math.prod(header.shape) * header.dtype.itemsize
    if declared > available:  # a header that lies about its size, or a truncated file
        raise DataError(f"{path}: '{name}' declares shape {header.shape} ({_size(declared)}) but the file holds "
                        f"{_size(max(available, 0))} of data; the file is truncated or corrupt: save it again")
    if header.fortran:  # column-major: the first samples are not one block, so read the whole array
        rows_read, shape = header.shape[0], header.shape
    else:
        rows_read, shape = rows, (rows, *header.shape[1:])
    nbytes = _check_read_size(path, name, header, rows_read)
    data = bytearray(nbytes)  # writable, so torch.from_numpy later needs no copy and gives no warning
    view, got = memoryview(data), 0
    while got < nbytes:
        # open('rb') and ZipFile.open both give buffered files; typeshed types the latter as plain IO[bytes]
        chunk = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not chunk:
            break
        got += chunk
    if got != nbytes:
        raise DataError(f"{path}: '{name}' ends after {_size(got)} of {_size(nbytes)}; the file is truncated or "
                        "corrupt: save it again")
    arr = np.frombuffer(data, dtype=header.dtype).reshape(shape, order="F" if header.fortran else "C")
    return arr[:rows]


def _no_x(path: Path, names) -> None:
    found = ", ".join(sorted(names)) or "nothing"
    raise DataError(f"{path}: no array named 'x' (found {found}); {_SAVE_HINT}")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


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
                        f"classes; labels must be 0..{num_classes - 1} (or pass the right "
                        f"{setting_ref('num_classes')})")
    return y.astype(np.int64)


def _one_hot(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1))
