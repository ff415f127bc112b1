"""What kind of sample a model takes: the names every stage shares (no torch here, a bottom layer).

A batch, a metric, an attack and the detection's findings each say which modality they are about, so a stage
never applies what belongs to another (an image metric to a tabular record, an attack on pixels to token ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Modality = Literal["image", "tabular", "text"]
MODALITIES: tuple[str, ...] = ("image", "tabular", "text")
# A metric that means the same on every modality (label accuracy, the scan-level recognised fraction).
ANY = "any"


def applies(declared: str, modality: str) -> bool:
    """Whether something declared for ``declared`` (a modality or ``ANY``) applies to a batch of ``modality``."""
    return declared in (ANY, modality)


@dataclass(frozen=True)
class Words:
    """What a report calls one sample of a modality, so the terminal, JSON, HTML and markdown say it alike."""

    counted: str  # what the coverage counts: "sample(s)" on images (the README's wording), else the kind of sample
    item: str  # what a reference set holds and a report shows: "image", "record", "line"
    original: str  # what a reconstruction is matched to: "its own original" image, "its own record"
    moved: str  # how the conditioning test moves the input by epsilon ("{epsilon}" filled in); "" where it cannot

    def move(self, epsilon: float) -> str:
        return self.moved.format(epsilon=f"{epsilon:g}")


_WORDS = {
    "image": Words("sample", "image", "original", "{epsilon} of the pixel range"),
    # the encoded record: continuous columns standardised, so a move of epsilon is epsilon of each column's
    # standard deviation; one-hot entries (0/1) move by epsilon too (update.conditioning: no bounds off images)
    "tabular": Words("record", "record", "record",
                     "{epsilon} standard deviations per continuous column and {epsilon} per one-hot entry"),
    "text": Words("line", "line", "line", ""),  # token ids: no small move exists, conditioning is not measured
}


def words(modality: str) -> Words:
    """The report's words for ``modality``; an unknown one (an older report) reads as images."""
    return _WORDS.get(modality, _WORDS["image"])
