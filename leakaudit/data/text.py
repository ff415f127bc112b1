"""Text samples: ``--data lines.txt`` (one sample per line) and ``--tokenizer tokenizer.json``.

The tokenizer is the user's, read with the ``tokenizers`` library (imported here only, so image scans never
need it; nothing is downloaded: a file path, never a hub name). Each line is encoded without special tokens,
truncated to the model's sequence length T (``input_shape`` (T,)) and padded on the right with the tokenizer's
padding token (its padding setting, else a ``[PAD]`` or ``<pad>`` token of the vocabulary). Blank lines are
skipped.

- A next-word model (logits at every position) trains on each line's next tokens: the targets are the ids
  shifted by one, padding left out (``models.text.next_token_targets``).
- A classifier needs a label per line: the line's last tab-separated field, an integer class index
  (``the movie was fine<TAB>1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, InputError, argument_ref, setting_ref
from ..models.text import TextTask, next_token_targets
from .folder import check_regular
from .interface import Normalization, SampleBatch, TextSamples

# named in messages: the CLI shows each as its option, a Python caller reads the setting (or argument)
TOKENIZER = setting_ref("tokenizer")
DATA = argument_ref("data")

MAX_TEXT_BYTES = 16 * 2**20  # a lines file above this is not a client's batch
INSTALL_HINT = "pip install 'leakaudit[text]'"
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")


def load_tokenizer(path: str | Path) -> Any:
    """The user's ``tokenizers`` tokenizer from its JSON file; exit-2 errors for a missing library or a bad file."""
    path = Path(path)
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise InputError(f"{TOKENIZER} {path}: reading a tokenizer needs the tokenizers library; {INSTALL_HINT}") \
            from e
    if not path.is_file():
        raise DataError(f"{TOKENIZER} {path}: no such file; give the tokenizer.json your model was trained with")
    check_regular(path, "give the tokenizer.json your model was trained with")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 -- the library's parse errors are many kinds
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"{TOKENIZER} {path}: not a tokenizers JSON file ({first}); save it with "
                        "tokenizer.save('tokenizer.json')") from e


def pad_id_of(tokenizer: Any, path: Path) -> int:
    padding = tokenizer.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in PAD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    raise DataError(f"{TOKENIZER} {path}: has no padding token; add one ([PAD]) to its vocabulary or enable "
                    "padding (tokenizer.enable_padding(pad_id=..., pad_token=...)) and save it again")


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path}: no such file; point {DATA} at a text file with one sample per line")
    check_regular(path, f"point {DATA} at a text file with one sample per line")
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise DataError(f"{path}: larger than {MAX_TEXT_BYTES // 2**20} MiB; give the lines of one client's batch")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the lines as UTF-8") from e
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path}: no lines with text; give one sample per line")
    return lines


def load_text(path: str | Path, *, tokenizer: str | Path | None, seq_len: int, embedding_rows: int,
              task: TextTask, num_classes: int, limit: int | None = None) -> SampleBatch:
    """A ``SampleBatch`` of ``modality`` text: ``x`` the padded ids (N, T), ``y`` the targets."""
    path = Path(path)
    if tokenizer is None:
        raise InputError(f"{path}: a text model needs its tokenizer to read lines; give {TOKENIZER} "
                         "tokenizer.json (the one the model was trained with)")
    tok_path = Path(tokenizer)
    tok = load_tokenizer(tok_path)
    vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
    if vocab_size > embedding_rows:
        raise InputError(f"{TOKENIZER} {tok_path}: its vocabulary has {vocab_size} tokens, the model's embedding "
                         f"{embedding_rows} rows; give the tokenizer the model was trained with")
    pad = pad_id_of(tok, tok_path)
    lines = read_lines(path)
    if limit is not None:
        lines = lines[:limit]
    labels: list[int] = []
    if task == "classify":
        lines, labels = _split_labels(path, lines, num_classes)
    ids = torch.full((len(lines), seq_len), pad, dtype=torch.int64)
    lengths, texts = [], []
    for i, line in enumerate(lines):
        enc = tok.encode(line, add_special_tokens=False).ids[:seq_len]
        if not enc:
            raise DataError(f"{path}: line {i + 1} encodes to no tokens; remove it or check the tokenizer")
        ids[i, : len(enc)] = torch.tensor(enc, dtype=torch.int64)
        lengths.append(len(enc))
        texts.append(tok.decode(enc, skip_special_tokens=False))
    vocab = [""] * vocab_size
    for token, index in tok.get_vocab(with_added_tokens=True).items():
        if 0 <= index < vocab_size:
            vocab[index] = token
    y = next_token_targets(ids, pad) if task == "next-token" else torch.tensor(labels, dtype=torch.int64)
    payload = TextSamples(ids=ids, lengths=tuple(lengths), texts=tuple(texts), vocab=tuple(vocab), pad_id=pad,
                          task=task, tokenizer_json=tok.to_str())
    return text_batch(payload, y, names=tuple(f"{path.name}:{i + 1}" for i in range(len(lines))), source=str(path))


def text_batch(text: TextSamples, y: torch.Tensor, *, names: tuple[str, ...], source: str) -> SampleBatch:
    # ``pixels`` carries the ids as floats, so code that only moves tensors around keeps working; nothing
    # image-specific may be computed from it (modality.md).
    return SampleBatch(x=text.ids, y=y, pixels=text.ids.to(torch.float32), names=names, source=source,
                       normalization=Normalization("none", (0.0,), (1.0,)),
                       original_shapes=tuple((int(text.ids.shape[1]),) for _ in names), modality="text", text=text)


def _split_labels(path: Path, lines: list[str], num_classes: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for i, line in enumerate(lines):
        text, sep, label = line.rpartition("\t")
        try:
            value = int(label) if sep else -1
        except ValueError:
            value = -1
        if not sep or not text.strip() or not 0 <= value < num_classes:
            raise DataError(f"{path}: line {i + 1} has no class label; a classifier's lines end in a tab and the "
                            f"class index (0 to {num_classes - 1}): 'text<TAB>label'")
        texts.append(text)
        labels.append(value)
    return texts, labels


def decode(text: TextSamples, ids: list[int]) -> str:
    """Recovered ids as the tokenizer writes them (padding dropped); the vocabulary's strings joined by spaces
    when the tokenizers library is not there."""
    ids = [int(i) for i in ids if int(i) != text.pad_id and 0 <= int(i) < text.vocab_size]
    if text.tokenizer_json:
        try:
            from tokenizers import Tokenizer

            return str(Tokenizer.from_str(text.tokenizer_json).decode(ids, skip_special_tokens=False))
        except ImportError:
            pass
    return " ".join(text.vocab[i] for i in ids)


def encoder(text: TextSamples):
    """str -> token ids with the scan's tokenizer (no special tokens, no padding), for reference lines."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(text.tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    return lambda line: [int(i) for i in tok.encode(line, add_special_tokens=False).ids]


def tokenizer_summary(text: TextSamples) -> dict[str, Any]:
    return {"vocab_size": text.vocab_size, "pad_id": text.pad_id, "task": text.task,
            "model": json.loads(text.tokenizer_json).get("model", {}).get("type") if text.tokenizer_json else None}
