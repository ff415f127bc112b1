"""The reference images of the "recognised" test: the user's ``--reference-data`` or the bundled set.

A reference set is brought to the model's sample shape (channels and size) once per scan; the recognition test
(``metrics.recognition``) adds the scan's own other samples to it. Reference images are data like samples:
only regular image files or arrays are read, with the same size limits, and no labels are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, setting_ref

BUNDLED = "natural64.npz"
BUNDLED_NAME = ("leakaudit natural64: 64 crops of 12 photos from scikit-image, scikit-learn and matplotlib "
                "(CC0, CC BY 2.0, public domain; references/README.md)")
MAX_REFERENCES = 1000  # more adds time, not evidence: p is already resolved to 1/1001
# Of a large scan's samples, this many (evenly spaced) serve as every sample's references: each reconstruction is
# compared with each reference, so all of them would make a scan's scoring grow with the square of its size,
# while p is already resolved to well below the rules' 0.02. A batch's own other samples always count.
MAX_SCAN_REFERENCES = 256


@dataclass(frozen=True)
class ReferenceSet:
    """Reference images in pixel space [0, 1], in the model's sample shape."""

    pixels: torch.Tensor  # (K, C, H, W) or (K, D); may be empty
    source: str  # what they are, for the report
    bundled: bool
    note: str = ""  # e.g. why there are none (non-image samples)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def with_samples(self, samples: torch.Tensor) -> "ScanReferences":
        """This set plus the scan's samples (pixel space; at most ``MAX_SCAN_REFERENCES`` of them, evenly spaced):
        every sample's references, itself left out later."""
        samples = samples.detach().cpu()
        note = self.note
        if samples.shape[0] > MAX_SCAN_REFERENCES:
            keep = torch.linspace(0, samples.shape[0] - 1, MAX_SCAN_REFERENCES).round().long()
            note = (f"{MAX_SCAN_REFERENCES} of the scan's {samples.shape[0]} samples (evenly spaced) serve as "
                    "references, besides each batch's own" + (f"; {note}" if note else ""))
            samples = samples[keep]
        pool = torch.cat([self.pixels, samples.to(self.pixels.dtype)]) if len(self) else samples.float()
        return ScanReferences(pool, self.source, self.bundled, len(self), int(samples.shape[0]), note)


@dataclass(frozen=True)
class ScanReferences:
    """What each sample of a scan is compared with besides its own original: a reference set and the scan's
    samples (the recognition test leaves out the sample itself and any copy of it)."""

    pixels: torch.Tensor
    source: str
    bundled: bool
    reference_set: int  # how many of ``pixels`` come from the reference set
    scan_samples: int  # how many are the scan's samples
    note: str = ""

    def summary(self) -> dict[str, object]:
        """For the report (JSON-ready)."""
        return {"source": self.source, "bundled": self.bundled, "reference_set": self.reference_set,
                "scan_samples": self.scan_samples, "note": self.note}


def scan_references(path: str | Path | None, samples: torch.Tensor) -> ScanReferences:
    """The references of a scan over ``samples`` (pixel space, every sample of every batch)."""
    return load_reference_set(path, tuple(samples.shape[1:])).with_samples(samples)


def load_reference_set(path: str | Path | None, sample_shape: tuple[int, ...]) -> ReferenceSet:
    """``path`` (a folder of images, or a .npz/.npy array ``x``) or, when None, the bundled set, in ``sample_shape``."""
    if len(sample_shape) != 3:
        empty = torch.zeros((0, *sample_shape))
        if path is not None:
            raise DataError(f"{path}: {setting_ref('reference_data')} is for image samples, but the model takes "
                            f"samples of shape {tuple(sample_shape)}; leave it out (the scan's other samples are the "
                            "references)")
        return ReferenceSet(empty, "none (not image samples: the scan's other samples are the references)", False)
    if path is None:
        return ReferenceSet(_bundled(sample_shape), BUNDLED_NAME, True)
    return ReferenceSet(_user(Path(path), sample_shape), str(path), False)


def _bundled(shape: tuple[int, ...]) -> torch.Tensor:
    from ..resources import references_dir

    with references_dir().joinpath(BUNDLED).open("rb") as f:
        pixels = np.load(f)["pixels"].astype(np.float32) / 255.0  # (K, 64, 64, 3)
    return _fit_all("bundled references", list(pixels), shape)


def _fit_all(source: str, images: list[np.ndarray], shape: tuple[int, ...]) -> torch.Tensor:
    from ..data.convert import fit

    return torch.from_numpy(np.stack([fit(source, img, shape) for img in images]).astype(np.float32))


def _user(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    from ..data.arrays import ARRAY_EXTENSIONS
    from ..data.folder import IMAGE_EXTENSIONS, check_regular, read_image

    fix = f"point {setting_ref('reference_data')} at a folder of images or a .npz/.npy array of them"
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; {fix}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: holds no images ({'/'.join(IMAGE_EXTENSIONS)}); {fix}")
        for p in files[:MAX_REFERENCES]:
            check_regular(p, "remove it from the reference folder")
        return _fit_all(str(path), [read_image(p) for p in files[:MAX_REFERENCES]], shape)
    check_regular(path, fix)
    if path.suffix.lower() not in ARRAY_EXTENSIONS:
        raise DataError(f"{path}: unsupported reference file '{path.suffix}'; {fix}")
    from ..data import load_samples, normalization

    # An array must already have the model's layout, as for --data; labels are not needed, any are ignored.
    batch = load_samples(path, input_shape=shape, num_classes=2 ** 31 - 1, normalization=normalization(
        "none", channels=shape[0]), limit=MAX_REFERENCES)
    return batch.pixels
