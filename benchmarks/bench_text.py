"""Text leakage per model and defense (issue 23): what each attack recovers from one client update.

Rows: the bundled next-word LSTM (examples/models/text_lstm.onnx), the same LSTM trained with dropout 0.25 and
exported in training mode, and a small transformer intent classifier (zoo ``text-transformer``, trained here on
examples/text/intents.txt) -- each undefended and under a noise defense; the dropout model is its own row. Every
scan: the first ``--lines`` lines of examples/text/batch.txt as one client batch, the quick budget, the example's
200 lines as references. Per attack: mean token recall, ROUGE-L, exact lines, how many lines were recognised,
the seconds; then the verdict.

    python3 benchmarks/bench_text.py            # about 3 minutes on one core
    python3 benchmarks/bench_text.py --lines 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leakaudit.audit import audit  # noqa: E402
from leakaudit.config import ScanSettings  # noqa: E402
from leakaudit.models.text import next_token_targets  # noqa: E402
from leakaudit.models.zoo import create_model  # noqa: E402

TEXT = ROOT / "examples" / "text"
SEQ_LEN = 12


def _export(model: torch.nn.Module, path: Path) -> Path:
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, SEQ_LEN, dtype=torch.int64),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                          input_names=["ids"], output_names=["logits"],
                          dynamic_axes={"ids": {0: "batch"}, "logits": {0: "batch"}})
    return path


def _encode(lines: list[str]) -> tuple[torch.Tensor, int, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TEXT / "tokenizer.json"))
    pad = tok.token_to_id("[PAD]")
    ids = torch.full((len(lines), SEQ_LEN), pad, dtype=torch.int64)
    for i, line in enumerate(lines):
        enc = tok.encode(line, add_special_tokens=False).ids[:SEQ_LEN]
        ids[i, : len(enc)] = torch.tensor(enc)
    return ids, pad, tok.get_vocab_size()


def _train(model: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor, epochs: int = 8) -> torch.nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for b in torch.randperm(len(ids)).split(16):
            opt.zero_grad()
            out = model(ids[b])
            loss = F.cross_entropy(out.transpose(1, 2) if out.dim() == 3 else out, targets[b], ignore_index=-100)
            loss.backward()
            opt.step()
    return model


def build_models(folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (model, data file) for the rows."""
    lines = [x for x in (TEXT / "lines.txt").read_text().splitlines() if x.strip()]
    ids, pad, vocab = _encode(lines)
    torch.manual_seed(0)
    dropout = _train(create_model("lstm-lm", num_classes=vocab, input_shape=(SEQ_LEN,), dropout=0.25), ids,
                     next_token_targets(ids, pad))
    pairs = [x.rsplit("\t", 1) for x in (TEXT / "intents.txt").read_text().splitlines() if x.strip()]
    intent_ids, _, _ = _encode([t for t, _ in pairs])
    torch.manual_seed(0)
    classifier = _train(create_model("text-transformer", num_classes=3, input_shape=(SEQ_LEN,), vocab_size=vocab),
                        intent_ids, torch.tensor([int(y) for _, y in pairs]))
    return {"lstm": (ROOT / "examples" / "models" / "text_lstm.onnx", TEXT / "batch.txt"),
            "lstm dropout 0.25": (_export(dropout, folder / "lstm_dropout.onnx"), TEXT / "batch.txt"),
            "transformer": (_export(classifier, folder / "transformer.onnx"), folder / "intents_batch.txt")}


def row(name: str, model: Path, data: Path, defense: tuple[str, ...], lines: int) -> None:
    settings = ScanSettings(tokenizer=str(TEXT / "tokenizer.json"), batch_size=lines, samples=lines, budget="quick",
                            reference_data=str(TEXT / "lines.txt"), defenses=defense)
    start = time.perf_counter()
    result = audit(str(model), str(data), settings)
    seconds = time.perf_counter() - start
    label = f"{name}, {', '.join(defense) or 'undefended'}"
    for a in result.attacks:
        if not a.ran:
            print(f"{label:38s} {a.name:10s} {a.status}: {a.reason[:70]}")
            continue
        m = a.means
        recognised = sum(1 for s in a.samples if s.metrics.get("text_skill", -1) >= 0.3
                         and s.metrics.get("match_p", 1) <= 0.02)
        best = max(a.sentences, key=lambda v: len(v["recovered"]), default={"recovered": ""}) if a.sentences else {}
        print(f"{label:38s} {a.name:10s} recall {m.get('token_recall', 0):.2f}  rougeL {m.get('rougeL', 0):.2f}  "
              f"exact {int(round(m.get('exact_match', 0) * len(a.samples)))}/{len(a.samples)}  "
              f"recognised {recognised}/{len(a.samples)}  {a.seconds:.1f} s  e.g. \"{best.get('recovered', '')}\"")
    control = "control reconstructed" if result.control.reconstructed else f"control: {result.control.status}"
    print(f"{label:38s} -> {result.overall.upper()} ({control}; {seconds:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        intents = [x for x in (TEXT / "intents.txt").read_text().splitlines() if x.strip()]
        (folder / "intents_batch.txt").write_text("\n".join(intents[: args.lines]) + "\n")
        models = build_models(folder)
        for name, (model, data) in models.items():
            defenses: list[tuple[str, ...]] = [()] if "dropout" in name else [(), ("noise:sigma=0.1",)]
            for defense in defenses:
                row(name, model, data, defense, args.lines)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
