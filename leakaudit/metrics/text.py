"""Scoring text reconstructions: token ids against the true lines (``modality`` text).

Per reconstruction, against the true line it is matched to (Hungarian assignment maximising token F1: a batch
attack's line order is arbitrary), with padding left out of both:

* ``token_precision`` / ``token_recall`` / ``token_f1``: the recovered bag of words against the line's, as
  multisets (a token counted as often as it occurs in both);
* ``rouge1`` / ``rouge2`` / ``rougeL``: ROUGE F1 over unigrams, bigrams and the longest common subsequence
  (Lin 2004), on token ids;
* ``exact_match``: 1 when the recovered sequence is the line's, token for token;
* recognition (``docs/text.md``): ``match_p``, the rank of the line's own token F1 among the reconstruction's
  token F1 to K reference lines -- the batch's other lines plus the reference lines (``--reference-data``
  lines.txt, else the bundled ``references/lines.txt``), copies of the line left out -- ``(1 + #references
  at least as close) / (K + 1)``, exactly as the image test ranks; and ``text_skill = (F1 - F1_base) / (1 -
  F1_base)``, where ``F1_base`` is the token F1 of the trivial output: the line's length in the most frequent
  tokens of the references. 0 = no better than guessing frequent words, 1 = exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..errors import DataError, setting_ref
from .scoring import AttackScore, SampleScore

TEXT_METRICS: tuple[str, ...] = ("token_precision", "token_recall", "token_f1", "rouge1", "rouge2", "rougeL",
                                 "exact_match", "match_p", "text_skill")
BUNDLED_LINES = "lines.txt"
BUNDLED_SOURCE = "leakaudit lines: 120 generated everyday lines (references/lines.txt)"


def tokens(ids: Sequence[int] | torch.Tensor, pad_id: int) -> list[int]:
    return [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids) if int(i) != pad_id]


def _f1(overlap: int, predicted: int, true: int) -> tuple[float, float, float]:
    precision = overlap / predicted if predicted else 0.0
    recall = overlap / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def bag_scores(pred: list[int], true: list[int]) -> tuple[float, float, float]:
    """Precision, recall and F1 of the recovered multiset of tokens."""
    overlap = sum((Counter(pred) & Counter(true)).values())
    return _f1(overlap, len(pred), len(true))


def rouge_n(pred: list[int], true: list[int], n: int) -> float:
    def grams(s: list[int]) -> Counter:
        return Counter(tuple(s[i:i + n]) for i in range(len(s) - n + 1))

    p, t = grams(pred), grams(true)
    return _f1(sum((p & t).values()), sum(p.values()), sum(t.values()))[2]


def lcs(a: list[int], b: list[int]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(pred: list[int], true: list[int]) -> float:
    return _f1(lcs(pred, true), len(pred), len(true))[2]


def pair_metrics(pred: list[int], true: list[int]) -> dict[str, float]:
    precision, recall, f1 = bag_scores(pred, true)
    return {"token_precision": precision, "token_recall": recall, "token_f1": f1, "rouge1": rouge_n(pred, true, 1),
            "rouge2": rouge_n(pred, true, 2), "rougeL": rouge_l(pred, true), "exact_match": float(pred == true)}


def frequent_baseline(references: Sequence[list[int]], length: int) -> list[int]:
    """The trivial output: ``length`` tokens, the references' most frequent ones (each as often as it is among
    the most frequent ``length`` occurrences, so a frequent word may repeat as it does in real lines)."""
    counts = Counter(t for line in references for t in line)
    ranked = [t for t, _ in counts.most_common()]
    return ranked[:length]


@dataclass(frozen=True)
class TextRecognition:
    match_p: float
    references: int
    skill: float
    baseline_f1: float


def recognise(pred: list[int], own: list[int], references: Sequence[list[int]]) -> TextRecognition:
    """``match_p`` and ``text_skill`` of one reconstruction (module docstring); copies of ``own`` among the
    references are left out."""
    refs = [list(r) for r in dict.fromkeys(tuple(r) for r in references) if list(r) != own]  # distinct lines
    sim = bag_scores(pred, own)[2]
    closer = sum(1 for r in refs if bag_scores(pred, r)[2] >= sim)
    base = bag_scores(frequent_baseline(refs, len(own)), own)[2] if refs else 0.0
    skill = (sim - base) / (1 - base) if base < 1 else 0.0
    return TextRecognition(match_p=(1 + closer) / (len(refs) + 1), references=len(refs), skill=skill,
                           baseline_f1=base)


def match_lines(preds: list[list[int]], trues: list[list[int]]) -> list[tuple[int, int]]:
    """One-to-one (reconstruction, line) pairs maximising the total token F1."""
    from scipy.optimize import linear_sum_assignment

    if not preds or not trues:
        return []
    cost = [[-bag_scores(p, t)[2] - 1e-3 * rouge_l(p, t) for t in trues] for p in preds]
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True))


def score_text(recon: torch.Tensor, true_ids: torch.Tensor, *, pad_id: int, names: Sequence[str],
               references: Sequence[list[int]] = (), attack: str = "",
               labels_true: Sequence[int] | None = None) -> AttackScore:
    """Score token-id reconstructions (N', L) against the true lines (N, T): the metrics of the module docstring
    per matched pair, their means, and the recognition test against the batch's other lines + ``references``."""
    preds = [tokens(r, pad_id) for r in recon]
    trues = [tokens(t, pad_id) for t in true_ids]
    samples = []
    for r, c in match_lines(preds, trues):
        values = pair_metrics(preds[r], trues[c])
        refs = [t for j, t in enumerate(trues) if j != c] + list(references)
        rec = recognise(preds[r], trues[c], refs)
        values.update(match_p=rec.match_p, text_skill=rec.skill)
        samples.append(SampleScore(index=r, original_index=c, name=names[c], metrics=values,
                                   label_true=int(labels_true[c]) if labels_true is not None else None,
                                   references=rec.references))
    means = {m: sum(s.metrics[m] for s in samples) / len(samples) for m in TEXT_METRICS} if samples else {}
    notes = () if len(samples) == len(trues) else (
        f"{len(trues) - len(samples)} line(s) without a reconstruction to match",)
    return AttackScore(attack=attack, samples=tuple(samples), means=means, matched_by="token_f1", notes=notes,
                       modality="text")


def scan_references(path: str | Path | None, text, samples: torch.Tensor):
    """The text scan's ``ScanReferences``: the reference lines (``--reference-data`` lines.txt, else the bundled
    ones) encoded with the scan's tokenizer and padded like the samples, then the scan's own lines. ``pixels``
    holds token ids (as floats, like a text batch's)."""
    from ..data.text import encoder
    from .references import MAX_REFERENCES, ReferenceSet

    encode = encoder(text)
    lines, source = read_reference_lines(Path(path) if path is not None else None, encode)
    lines = lines[:MAX_REFERENCES]
    width = int(samples.shape[1])
    ids = torch.full((len(lines), width), float(text.pad_id))
    for i, line in enumerate(lines):
        kept = line[:width]
        ids[i, : len(kept)] = torch.tensor(kept, dtype=torch.float32)
    return ReferenceSet(ids, source, path is None).with_samples(samples)


def reference_lines(references: torch.Tensor | None, pad_id: int) -> list[list[int]]:
    if references is None:
        return []
    return [tokens(r.long(), pad_id) for r in references]


def read_reference_lines(path: Path | None, encode) -> tuple[list[list[int]], str]:
    """Reference lines as token ids (``encode``: str -> ids, padding dropped): the user's lines.txt, else the
    bundled set. Returns them and what they are, for the report."""
    from ..data.text import read_lines

    if path is None:
        from ..resources import references_dir

        text = references_dir().joinpath(BUNDLED_LINES).read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip()]
        return [encode(line) for line in lines], BUNDLED_SOURCE
    try:
        lines = read_lines(Path(path))
    except DataError as e:
        raise DataError(f"{setting_ref('reference_data')}: {e}") from e
    return [encode(line) for line in lines], str(path)


def sentence_view(recovered: torch.Tensor, true: torch.Tensor, text) -> dict[str, object]:
    """One sample's ``sentence`` for the report: the true line and the recovered one as text and token by token,
    each token marked with whether the other side has it (bag of words: ``recovered`` on the true side, ``in_line``
    on the recovered side) and whether it sits at the same position (``in_place``)."""
    from ..data.text import decode

    pred, own = tokens(recovered, text.pad_id), tokens(true, text.pad_id)
    left = Counter(own)
    rec_tokens = []
    for i, t in enumerate(pred):
        hit = left[t] > 0
        left[t] -= hit
        rec_tokens.append({"text": text.vocab[t] if 0 <= t < text.vocab_size else f"[{t}]", "in_line": hit,
                           "in_place": i < len(own) and own[i] == t})
    found = Counter(pred)
    true_tokens = []
    for i, t in enumerate(own):
        hit = found[t] > 0
        found[t] -= hit
        true_tokens.append({"text": text.vocab[t], "recovered": hit, "in_place": i < len(pred) and pred[i] == t})
    return {"true": decode(text, own), "recovered": decode(text, pred), "true_tokens": true_tokens,
            "recovered_tokens": rec_tokens}
