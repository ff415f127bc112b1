"""What kind of sample a model takes: the names every stage shares (no torch here, a bottom layer).

A batch, a metric, an attack and the detection's findings each say which modality they are about, so a stage
never applies what belongs to another (an image metric to a tabular record, an attack on pixels to token ids).
"""

from __future__ import annotations

from typing import Literal

Modality = Literal["image", "tabular", "text"]
MODALITIES: tuple[str, ...] = ("image", "tabular", "text")
# A metric that means the same on every modality (label accuracy, the scan-level recognised fraction).
ANY = "any"


def applies(declared: str, modality: str) -> bool:
    """Whether something declared for ``declared`` (a modality or ``ANY``) applies to a batch of ``modality``."""
    return declared in (ANY, modality)
