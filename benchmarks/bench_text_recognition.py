"""How the text recognition test separates trivial outputs from recognisable ones (the threshold of
``text-recognised`` in rules/default.toml and rules/strict.toml).

Takes the bundled example's 200 lines (examples/text/lines.txt, tokenized with its tokenizer) and, for
each line, scores synthetic "reconstructions" against it with the other 199 lines as references (as a scan with
``--reference-data lines.txt`` has them), or with the bundled references/lines.txt (K = 120, the default):

* trivial: the references' most frequent tokens (the line's length of them), another line of the set, random
  tokens of the vocabulary;
* recognisable: the line with its words shuffled (the bag of words leaks), with a quarter / half of its tokens
  replaced by random ones, with its last half cut off.

Prints per output the fraction attributable (match_p <= 0.02) and, among those, the fraction whose skill
reaches each threshold of the grid.

    python3 benchmarks/bench_text_recognition.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leakaudit.metrics.interface import attributable  # noqa: E402
from leakaudit.metrics.text import frequent_baseline, recognise  # noqa: E402

TEXT = ROOT / "examples" / "text"
MAX_P = 0.02
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def encode_all(lines: list[str]) -> tuple[list[list[int]], int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TEXT / "tokenizer.json"))
    return [tok.encode(line, add_special_tokens=False).ids for line in lines], tok.get_vocab_size()


def outputs(line: list[int], others: list[list[int]], vocab: int, rng: random.Random) -> dict[str, list[int]]:
    def replaced(frac: float) -> list[int]:
        out = list(line)
        for i in rng.sample(range(len(out)), max(1, round(frac * len(out)))):
            out[i] = rng.randrange(2, vocab)
        return out

    shuffled = list(line)
    rng.shuffle(shuffled)
    return {
        "most frequent tokens": frequent_baseline(others, len(line)),
        "another line": rng.choice(others),
        "random tokens": [rng.randrange(2, vocab) for _ in line],
        "shuffled words": shuffled,
        "1/4 tokens replaced": replaced(0.25),
        "1/2 tokens replaced": replaced(0.5),
        "first half only": line[: max(1, len(line) // 2)],
    }


def main() -> None:
    start = time.perf_counter()
    lines = [x for x in (TEXT / "lines.txt").read_text().splitlines() if x.strip()]
    ids, vocab = encode_all(lines)
    bundled, _ = encode_all([x for x in (ROOT / "references" / "lines.txt").read_text().splitlines() if x.strip()])
    rng = random.Random(0)
    for label, refs_of in (("own lines (K=199)", lambda i: ids[:i] + ids[i + 1:]),
                           ("bundled references (K=120)", lambda i: bundled)):
        print(f"\nreferences: {label}")
        print(f"{'output':24s} {'attributable':>12s} " + " ".join(f"skill>={t:<4g}" for t in GRID))
        table: dict[str, list[tuple[bool, float]]] = {}
        for i, line in enumerate(ids):
            others = refs_of(i)
            for name, out in outputs(line, ids[:i] + ids[i + 1:], vocab, rng).items():
                rec = recognise(out, line, others)
                table.setdefault(name, []).append((attributable(rec.match_p, rec.references, MAX_P), rec.skill))
        for name, rows in table.items():
            att = sum(a for a, _ in rows) / len(rows)
            cells = " ".join(f"{sum(a and s >= t for a, s in rows) / len(rows):>10.1%}" for t in GRID)
            print(f"{name:24s} {att:>12.1%} {cells}")
    print(f"\n{len(ids)} lines, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
