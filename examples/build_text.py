"""Build the bundled text example: lines we generate, a word-level tokenizer trained on them, and a small
next-word LSTM (``examples/models/text_lstm.onnx``) trained briefly on the lines.

Run from anywhere (outputs go next to this file; needs the ``tokenizers`` library, ``pip install -e ".[text]"``):

    python examples/build_text.py

The text example lives in ``examples/text/``, not under ``examples/samples/``: that folder is the image
example, and a sub-folder there would read as a class folder.

The lines are short messages of the kind a phone keyboard sees, made from templates with a fixed seed (no
corpus is copied). ``lines.txt`` holds all of them; ``batch.txt`` the four a client trains on in the README's
scan; ``intents.txt`` the same lines with an intent label (tab-separated) for the classifier of
``benchmarks/bench_text.py``. The model is trained for a few epochs: an FL server attacks a trained global model.
"""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from leakaudit.models.text import next_token_targets  # noqa: E402
from leakaudit.models.zoo import create_model  # noqa: E402

TEXT_DIR = HERE / "text"
MODEL = HERE / "models" / "text_lstm.onnx"
SEQ_LEN = 12
SEED = 0
LINES = 200

PEOPLE = ["i", "we", "my sister", "the team", "our neighbour", "my brother", "the doctor", "your friend",
          "grandma", "the plumber", "my boss", "uncle peter", "the driver", "anna", "tom", "the teacher"]
PLANS = ["will be home", "can meet you", "am leaving work", "will call you", "can pick up the kids",
         "will be at the station", "need to see the dentist", "am going to the gym", "will walk the dog",
         "can fix the sink", "will cook pasta", "might be late", "should arrive", "want to watch a film",
         "hope to finish the garden", "will visit the museum"]
TIMES = ["at six", "after lunch", "tomorrow morning", "on friday", "tonight", "in ten minutes", "before dinner",
         "next week", "at noon", "later today", "on sunday afternoon", "around eight", "this evening",
         "after school", "before the meeting", "during the break"]
REQUESTS = ["can you send me", "please bring", "do not forget", "could you check", "remember to buy",
            "can you find"]
THINGS = ["the report", "some milk", "the keys", "the train tickets", "my charger", "the new photos",
          "the shopping list", "the address", "bread and eggs", "the invoice", "a birthday card",
          "the blue umbrella", "fresh tomatoes", "the parking permit", "two coffees", "the spare cable",
          "the recipe", "a new lamp", "the insurance papers", "cat food"]
FEELINGS = ["thanks so much for", "sorry about", "i really loved", "we enjoyed", "so happy about",
            "still upset about", "laughing about", "grateful for", "worried about", "excited about"]
EVENTS = ["the party", "yesterday", "the dinner", "the long wait", "your message", "the weekend", "the concert",
          "the game", "the wedding", "our trip to the lake", "the flat tyre", "the surprise gift", "the rainy hike",
          "the exam results", "the quiz night", "the puppy"]
ENDINGS = ["", "", "see you soon", "love you", "ok", "talk later", "cheers", "take care", "bye for now",
           "xx"]


def generate(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` distinct lines with their intent (0 plan, 1 request, 2 feeling)."""
    rng = random.Random(seed)
    lines: dict[str, int] = {}
    while len(lines) < n:
        intent = rng.randrange(3)
        if intent == 0:
            words = [rng.choice(PEOPLE), rng.choice(PLANS), rng.choice(TIMES)]
        elif intent == 1:
            words = [rng.choice(REQUESTS), rng.choice(THINGS), rng.choice(TIMES)]
        else:
            words = [rng.choice(FEELINGS), rng.choice(EVENTS)]
        words.append(rng.choice(ENDINGS))
        line = " ".join(w for w in words if w)
        lines.setdefault(line, intent)
    return list(lines.items())


# The bundled reference lines (references/lines.txt): everyday lines from other templates, for the text
# recognition test when no --reference-data is given.
REF_SUBJECTS = ["i", "we", "you", "the kids", "my mum", "the office", "our team", "the bus", "the shop", "he", "she"]
REF_VERBS = ["need to", "want to", "have to", "forgot to", "will try to", "did not", "cannot"]
REF_ACTIONS = ["pay the rent", "water the plants", "book a table", "answer the email", "clean the kitchen",
               "charge the phone", "renew the passport", "read the news", "fix the bike", "order a pizza",
               "call the bank", "wash the car"]
REF_TAILS = ["today", "this week", "at the weekend", "right now", "again", "before monday", "at home", "for you"]


def reference_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    while len(lines) < n:
        line = " ".join([rng.choice(REF_SUBJECTS), rng.choice(REF_VERBS), rng.choice(REF_ACTIONS),
                         rng.choice(REF_TAILS)])
        if line not in lines:
            lines.append(line)
    return lines


def train_tokenizer(lines: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # word-level: decoding joins the words with spaces
    return tok


def train_lm(ids: torch.Tensor, pad: int, vocab: int) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = create_model("lstm-lm", num_classes=vocab, input_shape=(SEQ_LEN,))
    targets = next_token_targets(ids, pad)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):  # a few epochs: a trained global model, not a converged one
        for batch in torch.randperm(len(ids)).split(16):
            opt.zero_grad()
            F.cross_entropy(model(ids[batch]).transpose(1, 2), targets[batch], ignore_index=-100).backward()
            opt.step()
    with torch.no_grad():
        loss = F.cross_entropy(model(ids).transpose(1, 2), targets, ignore_index=-100).item()
    print(f"trained lstm-lm: vocabulary {vocab}, next-token loss {loss:.3f} on the {len(ids)} lines")
    return model


def encode(tok, lines: list[str], pad: int) -> torch.Tensor:
    ids = torch.full((len(lines), SEQ_LEN), pad, dtype=torch.int64)
    for i, line in enumerate(lines):
        enc = tok.encode(line, add_special_tokens=False).ids[:SEQ_LEN]
        ids[i, : len(enc)] = torch.tensor(enc)
    return ids


def main() -> None:
    pairs = generate(LINES, SEED)
    lines = [line for line, _ in pairs]
    TEXT_DIR.mkdir(parents=True, exist_ok=True)
    (TEXT_DIR / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (TEXT_DIR / "batch.txt").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    (TEXT_DIR / "intents.txt").write_text("\n".join(f"{line}\t{intent}" for line, intent in pairs) + "\n",
                                          encoding="utf-8")
    (HERE.parent / "references" / "lines.txt").write_text("\n".join(reference_lines(120, SEED + 1)) + "\n",
                                                          encoding="utf-8")
    tok = train_tokenizer(lines)
    tok.save(str(TEXT_DIR / "tokenizer.json"))
    pad = tok.token_to_id("[PAD]")
    model = train_lm(encode(tok, lines, pad), pad, tok.get_vocab_size())
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, SEQ_LEN, dtype=torch.int64),), str(MODEL), dynamo=False,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                          input_names=["ids"], output_names=["logits"],
                          dynamic_axes={"ids": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {MODEL.relative_to(HERE.parent)} ({MODEL.stat().st_size // 1024} KiB) and "
          f"{len(lines)} lines in {TEXT_DIR.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
