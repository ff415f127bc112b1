"""Build the bundled reference images: ``references/natural64.npz`` (64 RGB crops of 64x64 px).

"Recognised" needs references: a reconstruction is attributed to its own sample only when it is closer to it
than to each of K other images (``leakaudit.metrics.recognition``). When the user gives no ``--reference-data``,
these crops serve. They come from photos whose licences allow redistribution (listed in
``references/README.md``) and deliberately from none of the bundled example photos (``examples/samples``), so a
scan of the examples never meets a crop of its own sample among the references.

Run from anywhere (the output goes to ``references/`` of the repository):

    pip install -e ".[dev]"
    python examples/build_references.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "references" / "natural64.npz"
SIZE = 64


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)())


def _sklearn(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(name))


def _matplotlib(name: str) -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data(name) as f:
        return np.asarray(Image.open(f).convert("RGB"))


# (source id, loader, number of crops). Colour photos get more crops than grey textures: most scanned images
# are colour. Each crop is a square of a different size and place, so the references differ in scale too.
SOURCES = (
    ("sklearn:china.jpg", lambda: _sklearn("china.jpg"), 9),
    ("sklearn:flower.jpg", lambda: _sklearn("flower.jpg"), 9),
    ("matplotlib:grace_hopper.jpg", lambda: _matplotlib("grace_hopper.jpg"), 8),
    ("skimage:hubble_deep_field", lambda: _skimage("hubble_deep_field"), 8),
    ("skimage:immunohistochemistry", lambda: _skimage("immunohistochemistry"), 8),
    ("skimage:coins", lambda: _skimage("coins"), 4),
    ("skimage:clock", lambda: _skimage("clock"), 4),
    ("skimage:brick", lambda: _skimage("brick"), 3),
    ("skimage:grass", lambda: _skimage("grass"), 3),
    ("skimage:gravel", lambda: _skimage("gravel"), 3),
    ("skimage:text", lambda: _skimage("text"), 2),
    ("skimage:microaneurysms", lambda: _skimage("microaneurysms"), 3),
)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3].astype(np.uint8)


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` square crops: the whole short side first, then smaller ones at seeded places."""
    h, w = image.shape[:2]
    side = min(h, w)
    out = []
    for k in range(count):
        size = side if k == 0 else int(side * rng.uniform(0.3, 0.8))
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = Image.fromarray(image[top:top + size, left:left + size])
        out.append(np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.LANCZOS)))
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    images, names = [], []
    for source, load, count in SOURCES:
        for k, crop in enumerate(_crops(_rgb(load()), count, rng)):
            images.append(crop)
            names.append(f"{source}#{k}")
    pixels = np.stack(images)  # (N, 64, 64, 3) uint8
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, pixels=pixels, names=np.array(names))
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()[:16]
    print(f"{OUT.relative_to(ROOT)}: {len(names)} images of {SIZE}x{SIZE} from {len(SOURCES)} photos, "
          f"sha256 {digest}...")


if __name__ == "__main__":
    main()
