"""Text metrics: bag-of-words precision/recall, ROUGE, exact match and the recognition test on token ids."""

from __future__ import annotations

import pytest
import torch

from leakaudit.metrics.text import pair_metrics, recognise, rouge_l, rouge_n, score_text

PAD = 0


def test_exact_reconstruction_scores_one_everywhere():
    line = [5, 6, 7, 8]
    assert pair_metrics(line, line) == {"token_precision": 1.0, "token_recall": 1.0, "token_f1": 1.0, "rouge1": 1.0,
                                        "rouge2": 1.0, "rougeL": 1.0, "exact_match": 1.0}


def test_the_right_words_in_the_wrong_order_keep_the_bag_and_lose_the_order():
    m = pair_metrics([8, 7, 6, 5], [5, 6, 7, 8])
    assert m["token_recall"] == 1.0 and m["rouge1"] == 1.0
    assert m["rouge2"] == 0.0 and m["rougeL"] == pytest.approx(0.25) and m["exact_match"] == 0.0


def test_rouge_values_by_hand():
    # candidate "a b c x", reference "a b c d e": 3 of 4 unigrams, 2 of 3 bigrams; LCS 3
    assert rouge_n([1, 2, 3, 9], [1, 2, 3, 4, 5], 1) == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert rouge_n([1, 2, 3, 9], [1, 2, 3, 4, 5], 2) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert rouge_l([1, 2, 3, 9], [1, 2, 3, 4, 5]) == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_repeated_tokens_count_once_per_occurrence():
    m = pair_metrics([5, 5, 5], [5, 6, 7])
    assert m["token_precision"] == pytest.approx(1 / 3) and m["token_recall"] == pytest.approx(1 / 3)


def _refs(k: int) -> list[list[int]]:
    return [[10 + i, 11 + i, 1, 2] for i in range(k)]  # 1 and 2 are frequent in every reference


def test_an_exact_line_is_attributable_and_skilled():
    rec = recognise([3, 4, 1, 5], [3, 4, 1, 5], _refs(49))
    assert rec.match_p == pytest.approx(1 / 50) and rec.references == 49 and rec.skill == 1.0


def test_the_frequent_tokens_have_no_skill_and_another_line_is_not_attributable():
    own = [3, 4, 1, 2]
    trivial = recognise([1, 2, 11, 10], own, _refs(49))  # the references' most frequent tokens
    assert trivial.skill <= 0.0
    other = recognise([30, 31, 32, 2], own, _refs(49) + [[30, 31, 32, 2]])
    assert other.match_p > 0.5


def test_score_text_matches_lines_whatever_the_order_and_drops_padding():
    true = torch.tensor([[5, 6, 7, PAD], [8, 9, PAD, PAD]])
    recon = torch.tensor([[8, 9, PAD, PAD], [5, 6, 7, PAD]])
    score = score_text(recon, true, pad_id=PAD, names=("a", "b"), references=_refs(60), attack="x")
    assert {(s.index, s.original_index) for s in score.samples} == {(0, 1), (1, 0)}
    assert all(s.metrics["exact_match"] == 1.0 and s.metrics["match_p"] <= 0.02 for s in score.samples)
    assert score.means["rougeL"] == 1.0
