"""Text samples: lines + the user's tokenizer -> padded token ids and next-token targets or class labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leakaudit.errors import DataError, InputError
from leakaudit.data.text import decode, load_text

pytest.importorskip("tokenizers")
TEXT = Path(__file__).resolve().parents[2] / "examples" / "text"
TOKENIZER = TEXT / "tokenizer.json"


def _vocab() -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER)).get_vocab_size()


def test_lines_become_padded_ids_with_shifted_targets(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("we enjoyed the party\n\nsorry about the dinner see you soon take care ok bye for now\n")
    batch = load_text(data, tokenizer=TOKENIZER, seq_len=6, embedding_rows=_vocab(), task="next-token",
                      num_classes=_vocab())
    assert batch.x.shape == (2, 6) and batch.x.dtype == torch.int64  # the blank line is skipped
    text = batch.text
    assert text is not None and text.lengths == (4, 6)  # the long line is truncated to the sequence length
    assert text.texts[0] == "we enjoyed the party"
    assert (batch.x[0, 4:] == text.pad_id).all()  # right padding
    assert batch.y[0].tolist()[:3] == batch.x[0, 1:4].tolist()  # position t predicts token t+1
    assert (batch.y[0, 3:] == -100).all() and batch.y[1, -1] == -100  # no target past the line or the window
    assert decode(text, batch.x[1].tolist()) == text.texts[1]


def test_classifier_lines_end_in_a_tab_and_the_label(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("we enjoyed the party\t2\ncan you send me the keys\t1\n")
    batch = load_text(data, tokenizer=TOKENIZER, seq_len=8, embedding_rows=_vocab(), task="classify",
                      num_classes=3)
    assert batch.y.tolist() == [2, 1] and batch.text.texts[1] == "can you send me the keys"
    data.write_text("we enjoyed the party\n")
    with pytest.raises(DataError, match=r"line 1 has no class label.*'text<TAB>label'"):
        load_text(data, tokenizer=TOKENIZER, seq_len=8, embedding_rows=_vocab(), task="classify", num_classes=3)


@pytest.mark.parametrize("content, tokenizer, rows, says", [
    ("hello\n", None, 500, "give tokenizer tokenizer.json"),
    ("hello\n", TOKENIZER, 10, "its vocabulary has .* tokens, the model's embedding 10 rows"),
    ("\n \n", TOKENIZER, 500, "no lines with text"),
])
def test_bad_text_input_is_one_clear_error(tmp_path, content, tokenizer, rows, says):
    data = tmp_path / "lines.txt"
    data.write_text(content)
    with pytest.raises(InputError, match=says):
        load_text(data, tokenizer=tokenizer, seq_len=8, embedding_rows=rows, task="next-token", num_classes=rows)


def test_a_file_that_is_not_a_tokenizer_is_refused(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    (tmp_path / "lines.txt").write_text("hello\n")
    with pytest.raises(DataError, match="not a tokenizers JSON file"):
        load_text(tmp_path / "lines.txt", tokenizer=bad, seq_len=8, embedding_rows=500, task="next-token",
                  num_classes=500)
