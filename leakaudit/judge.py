"""Judge reconstructions from anywhere: ``leakaudit score ORIGINALS RECONSTRUCTIONS``.

The same "recognised" test a scan applies (``metrics.recognition``, the rule profile's per-sample fail rules) on
two image folders whose files are matched by name: a researcher can judge their own attack's outputs with the
criterion leakaudit's verdict rests on, and the criterion can be checked on its own. The originals are each
other's references, plus ``--reference-data`` or the bundled set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError


@dataclass(frozen=True)
class Judged:
    """One reconstruction against its original."""

    name: str
    recognised: bool
    attributable: bool
    rules: tuple[str, ...]  # the recognition rules that fired
    match_p: float
    references: int
    ssim_skill: float
    psnr_gain: float
    transform: str
    similarity: dict[str, float]  # raw similarities (not the verdict): ssim, ssim_adjusted, psnr


@dataclass(frozen=True)
class Judgement:
    samples: tuple[Judged, ...]
    criterion: tuple[str, ...]  # rule descriptions
    profile: str
    references: dict[str, Any]
    shape: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def recognised(self) -> int:
        return sum(s.recognised for s in self.samples)

    def to_dict(self) -> dict[str, Any]:
        from .metrics.interface import chance

        k = min((s.references for s in self.samples), default=0)
        return {
            "kind": "leakaudit-score", "profile": self.profile, "criterion": list(self.criterion),
            "shape": list(self.shape), "references": self.references, "notes": list(self.notes),
            "summary": {"samples": len(self.samples), "recognised": self.recognised,
                        "chance_per_sample": chance(k) if self.samples else None,
                        "text": summary_line(self)},
            "samples": [{"name": s.name, "recognised": s.recognised, "attributable": s.attributable,
                         "rules": list(s.rules), "match_p": s.match_p, "references": s.references,
                         "ssim_skill": s.ssim_skill, "psnr_gain": s.psnr_gain, "transform": s.transform,
                         "similarity": s.similarity} for s in self.samples],
        }


def summary_line(j: Judgement) -> str:
    from .metrics.interface import chance

    k = min((s.references for s in j.samples), default=0)
    return (f"{j.recognised} of {len(j.samples)} recognised; a reconstruction with no information about its "
            f"sample is matched to it by chance with probability 1/{k + 1} ({chance(k):.3g})")


def _images(folder: Path, what: str) -> dict[str, Path]:
    from .data.folder import IMAGE_EXTENSIONS, check_regular

    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give the folder of {what} images")
    files = {p.stem: p for p in sorted(folder.iterdir())
             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
    if not files:
        raise DataError(f"{folder}: holds no images; give the folder of {what} images")
    for p in files.values():
        check_regular(p, f"remove it from the {what} folder")
    return files


def judge_folders(originals: str | Path, reconstructions: str | Path, *, reference_data: str | Path | None = None,
                  rules: str = "default") -> Judgement:
    """Judge each image of ``reconstructions`` against the image of the same name (any extension) in
    ``originals``. Every image is brought to the first original's shape (channels and size)."""
    from .data.convert import fit
    from .data.folder import read_image
    from .metrics import functional as MF
    from .metrics.interface import attributable
    from .metrics.recognition import recognise
    from .metrics.references import scan_references
    from .verdict.rules import fires_on, load_rules, recognition_rules

    criterion = recognition_rules(load_rules(rules), "image")  # the score command compares images
    orig_files, rec_files = _images(Path(originals), "original"), _images(Path(reconstructions), "reconstruction")
    names = [n for n in rec_files if n in orig_files]
    if not names:
        raise DataError(f"{reconstructions}: no file has the name of an original in {originals}; name each "
                        "reconstruction like its original (e.g. cat.png for cat.jpg)")
    first = read_image(orig_files[names[0]])
    shape = (first.shape[2] if first.shape[2] in (1, 3) else (3 if first.shape[2] == 4 else 1),
             first.shape[0], first.shape[1])
    notes = []
    unmatched = sorted(set(rec_files) - set(orig_files))
    if unmatched:
        notes.append(f"{len(unmatched)} reconstruction(s) without an original of the same name, not scored: "
                     + ", ".join(unmatched[:5]))

    def load(path: Path) -> np.ndarray:
        return fit(path, read_image(path), shape)

    pool_names = list(orig_files)
    pool = torch.from_numpy(np.stack([load(orig_files[n]) for n in pool_names]))
    recs = torch.from_numpy(np.stack([load(rec_files[n]) for n in names]))
    refs = scan_references(reference_data, pool)
    # the originals are the first rows of every sample's references (itself left out by the test)
    others = refs.pixels[:refs.reference_set]
    pairs = [(i, pool_names.index(n)) for i, n in enumerate(names)]
    _, verdicts = recognise(recs, pool, others, pairs)
    target = pool[[c for _, c in pairs]]
    raw = {"ssim": MF.ssim(recs, target), "ssim_adjusted": MF.ssim_best_adjusted(recs, target),
           "psnr": MF.psnr(recs, target)}
    samples = []
    for i, (name, v) in enumerate(zip(names, verdicts, strict=True)):
        metrics = {"match_p": v.match_p, "ssim_skill": v.ssim_skill, "psnr_gain": v.psnr_gain}
        fired = tuple(r.id for r in criterion if fires_on(r, metrics, (), v.references))
        max_p = min((r.max_p for r in criterion if r.max_p is not None), default=None)
        samples.append(Judged(
            name=name, recognised=bool(fired),
            attributable=bool(max_p is not None and attributable(v.match_p, v.references, max_p)),
            rules=fired, match_p=v.match_p, references=v.references, ssim_skill=v.ssim_skill,
            psnr_gain=v.psnr_gain, transform=v.transform,
            similarity={k: float(t[i]) for k, t in raw.items()}))
    return Judgement(tuple(samples), tuple(f"{r.id}: {r.describe()}" for r in criterion), rules,
                     refs.summary(), shape, tuple(notes))
