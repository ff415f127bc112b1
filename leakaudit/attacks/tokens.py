"""Attacks on text models through their token embedding.

* ``token-set``: the rows of the embedding's weight gradient that are non-zero are exactly the tokens in the
  batch (a row gets gradient only from the positions that looked it up). Exact when the client trains the
  embedding; with a frozen embedding the update has no such gradient and the attack does not apply. For a
  next-word model the rows name the tokens at positions that have a target: a line's last token is an input to
  nothing that is trained on, so it is added from the output bias's gradient, whose negative entries are
  tokens that are some position's target (sum over positions of softmax - one-hot). That part is a heuristic:
  a target the model also predicts strongly where it is not the target can come out positive and be missed.
  The set is the batch's, not a sample's: with several lines every sample's
  reconstruction is the whole set (``Reconstruction.x`` holds it in every row, ordered by gradient norm).
* ``lamp``: order recovery by gradient matching in embedding space, after LAMP (Balunovic et al., NeurIPS 2022):
  one continuous embedding per position, optimised so that the model's gradient at them matches the update (1 -
  cosine per layer, the embedding's own gradient left out since it is the token set's evidence); candidate tokens
  are restricted to the recovered token set (the whole vocabulary when the embedding is frozen); every
  ``discrete_every`` steps the embeddings are projected onto the nearest allowed token embedding, and discrete
  changes (swapping two tokens, moving a span) are kept when they lower ``gradient distance + lm_prior x the
  model's own next-token loss on the candidate`` -- the language-model prior LAMP takes from GPT-2, here from the
  audited model itself (a next-word model only; a classifier has no prior). A next-word model's targets are the
  line's own next tokens: during the continuous phase they are the soft assignment of the next position's
  embedding to the allowed tokens (a position assigned to padding has no target).

Both return ``Reconstruction.x`` as int64 token ids.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..detect.interface import Findings
from ..models.text import IGNORE_INDEX, TokenEmbedding, next_token_targets, token_embedding
from ..progress import AttackProgress, Observer
from ..update.losses import client_loss
from .engine import attacker_copy
from .interface import Attack, AttackSettings, AttackTarget, Reconstruction
from .registry import register_attack

AVOID_PENALTY = 3.0  # logits subtracted from tokens other lines already use, in the model's continuation
NONZERO_RTOL = 1e-7  # a row is "non-zero" above this fraction of the largest row norm (float round-off below)
FROZEN = ("the update carries no gradient of the token embedding (frozen embedding): the token set does not leak "
          "directly")


def embedding_gradient(target: AttackTarget) -> tuple[TokenEmbedding | None, torch.Tensor | None]:
    emb = token_embedding(target.module)
    if emb is None:
        return None, None
    return emb, target.gradients.get(emb.param)


def target_tokens(target: AttackTarget, vocab: int) -> list[int]:
    """A next-word model's target tokens, from its output bias gradient: the mean over positions of
    softmax - one_hot(target) is negative only at tokens that are some position's target. This finds a line's
    last token, which the embedding's gradient cannot: its input position has no target, so no gradient."""
    if target.text_task != "next-token":
        return []
    biases = [g for g in target.gradients.values() if g.dim() == 1 and g.numel() == vocab]
    if not biases:
        return []
    g = biases[-1].detach().double()
    return [int(i) for i in (g < -NONZERO_RTOL * float(g.abs().max())).nonzero().flatten()]


def batch_tokens(target: AttackTarget, emb: TokenEmbedding, grad: torch.Tensor) -> list[int]:
    """The token set: the embedding's non-zero rows, plus a next-word model's target tokens. A batch holds at most
    N x T distinct tokens: more non-zero rows than that (a noise defense makes every row non-zero) are cut to the
    N x T rows of largest gradient norm, where the batch's tokens stand out while the signal beats the noise."""
    tokens = recovered_tokens(grad)
    more = [t for t in target_tokens(target, emb.vocab_size) if t not in tokens and t != target.pad_id]
    return (tokens + more)[: max_tokens(target)]


def max_tokens(target: AttackTarget) -> int:
    return int(target.num_samples) * int(target.input_shape[0])


def recovered_tokens(grad: torch.Tensor) -> list[int]:
    """Token ids whose embedding row has gradient, largest norm first."""
    norms = grad.detach().double().norm(dim=1)
    top = float(norms.max()) if norms.numel() else 0.0
    if top == 0.0:
        return []
    rows = (norms > NONZERO_RTOL * top).nonzero().flatten()
    return [int(i) for i in rows[torch.argsort(norms[rows], descending=True)]]


def _text_skip(findings: Findings | None, module: nn.Module | None) -> str | None:
    if module is not None and token_embedding(module) is None:
        return "the model has no token embedding (not a text model)"
    return None


@register_attack
class TokenSet(Attack):
    name = "token-set"
    summary = "the batch's tokens from the non-zero rows of the embedding's weight gradient (exact when it trains)"
    modalities = ("text",)
    budgets = {b: AttackSettings(iterations=1, restarts=1, lr=0.0, tv=0.0) for b in ("quick", "standard", "thorough")}

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        return _text_skip(findings, module)

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        emb, grad = embedding_gradient(target)
        if emb is None:
            raise ValueError("token-set needs a model with a token embedding")
        tokens = batch_tokens(target, emb, grad) if grad is not None else []
        if grad is not None and len(recovered_tokens(grad)) > max_tokens(target):
            notes_cut = [f"{len(recovered_tokens(grad))} non-zero rows, more than the batch's {max_tokens(target)} "
                         "positions (noise on the update): kept those of largest gradient norm"]
        else:
            notes_cut = []
        notes = notes_cut + [FROZEN] if grad is None else notes_cut + [
            f"{len(tokens)} distinct tokens in the batch from the non-zero rows of '{emb.param}''s gradient"
            + (" and the output bias gradient's negative entries (next-word targets)" if target.text_task ==
               "next-token" else "") + " (the whole batch's set: every sample's row holds all of it)"]
        row = torch.tensor(tokens or [target.pad_id if target.pad_id is not None else 0], dtype=torch.int64)
        x = row.unsqueeze(0).expand(target.num_samples, -1).clone()
        return Reconstruction(attack=self.name, x=x, labels=target.labels, attack_loss=0.0, settings=settings,
                              seconds=time.perf_counter() - start, iterations_run=1, notes=tuple(notes))


@contextmanager
def substituted(module: nn.Module, emb: TokenEmbedding, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """While active, the embedding module returns ``values["z"]`` (when set) instead of its lookup."""
    sub = module.get_submodule(emb.module)

    def hook(_m: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        z = values.get("z")
        return output if z is None else z

    handle = sub.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _Problem:
    """The attacker's copy, the observed gradients it matches and the allowed tokens."""

    def __init__(self, target: AttackTarget, emb: TokenEmbedding, allowed: list[int], device: torch.device) -> None:
        self.target = target
        self.emb = emb
        self.device = device
        self.model = attacker_copy(target.module, device)
        params = dict(self.model.named_parameters())
        self.names = [n for n in target.gradients if n != emb.param and n in params]
        self.params = [params[n] for n in self.names]
        for p in self.params:
            p.requires_grad_(True)
        self.observed = [target.gradients[n].to(device) for n in self.names]
        self.table = params[emb.param].detach().to(device)  # (V, D): the server knows the global model
        self.task = target.text_task or "classify"
        self.pad = target.pad_id
        # A next-word model's padding is chosen in the discrete phase (where each line ends), not by the
        # continuous embeddings: every position of the relaxation holds a real token.
        drop = {self.pad} if self.task == "next-token" and len(set(allowed) - {self.pad}) > 0 else set()
        self.allowed = torch.tensor(sorted(set(allowed) - drop), dtype=torch.int64, device=device)
        self.allowed_emb = self.table[self.allowed]  # (S, D)
        self.values: dict[str, torch.Tensor] = {}
        self.continuations: list[torch.Tensor] = []  # a next-word model's own line from each allowed token
        self.n, self.t = target.num_samples, int(target.input_shape[0])
        # Each line's length (a next-word model's padding starts there): a first guess from the token count,
        # then chosen in every discrete round. A classifier's lines fill every position (padding is a token).
        guess = min(self.t, max(2, -(-len(self.allowed) // self.n)))
        self.lengths = [guess if self.task == "next-token" and self.pad is not None else self.t] * self.n
        self.labels = target.labels.to(device) if target.labels is not None and self.task == "classify" else None

    def distance(self, grads: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for g, o in zip(grads, self.observed, strict=True):
            if g is None:
                continue
            total = total + 1 - F.cosine_similarity(g.flatten(), o.flatten(), dim=0, eps=1e-12)
        return total / max(1, len(self.observed))

    def _loss(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "next-token":
            return client_loss(self.model, out, targets, "next_token")
        labels = self.labels if self.labels is not None else targets
        return client_loss(self.model, out, labels, self.target.loss)

    def soft_targets(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        """(N, T, V): position t's target is the soft assignment of position t+1's embedding to the allowed
        tokens, without the padding share (a position followed by padding has no target)."""
        d = torch.cdist(z.reshape(-1, z.shape[-1]), self.allowed_emb).reshape(self.n, self.t, -1)
        q = torch.softmax(-d / tau, dim=-1)
        full = torch.zeros(self.n, self.t, self.table.shape[0], device=self.device)
        full[:, :-1] = full[:, :-1].index_add(2, self.allowed, q[:, 1:])
        has_target = torch.arange(self.t, device=self.device)[None, :] + 1 < torch.tensor(
            self.lengths, device=self.device)[:, None]
        return full * has_target[..., None]

    def padded(self, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        if self.task != "next-token" or self.pad is None:
            return ids
        beyond = torch.arange(self.t, device=ids.device)[None, :] >= torch.tensor(lengths, device=ids.device)[:, None]
        return ids.masked_fill(beyond, self.pad)

    def continuous(self, z: torch.Tensor, tau: float) -> torch.Tensor:
        self.values["z"] = z
        ids = torch.zeros(self.n, self.t, dtype=torch.int64, device=self.device)
        with substituted(self.model, self.emb, self.values):
            out = self.model(ids)
            targets = self.soft_targets(z, tau) if self.task == "next-token" else self.labels
            if targets is None:  # a classifier whose labels are unknown: the most likely class
                targets = out.detach().argmax(-1)
            loss = self._loss(out, targets)
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self.values.pop("z", None)
        return self.distance(list(grads))

    @torch.no_grad()
    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Each position's nearest allowed token (no padding: ``padded`` cuts the lines)."""
        d = torch.cdist(z.reshape(-1, z.shape[-1]), self.allowed_emb)
        return self.allowed[d.argmin(dim=1)].reshape(self.n, self.t)

    def discrete(self, ids: torch.Tensor, lm_prior: float) -> tuple[float, float]:
        """(gradient distance, the model's next-token loss on ``ids``) of a discrete candidate batch."""
        out = self.model(ids)
        if self.task == "next-token":
            targets = next_token_targets(ids, self.pad if self.pad is not None else -1)
            loss = client_loss(self.model, out, targets, "next_token")
        else:
            loss = self._loss(out, self.labels if self.labels is not None else out.detach().argmax(-1))
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        dist = float(self.distance(list(grads)))
        prior = 0.0
        if lm_prior > 0 and self.task == "next-token":
            prior = float(loss.detach()) if bool((targets != IGNORE_INDEX).any()) else 0.0
        return dist, prior


def canonical(ids: torch.Tensor, pad: int | None, task: str) -> torch.Tensor:
    """A next-word model's line is right-padded: everything after its first padding token is padding."""
    if pad is None or task != "next-token":
        return ids
    seen = (ids == pad).cumsum(dim=1) > 0
    return ids.masked_fill(seen, pad)


def transformations(row: torch.Tensor, rng: torch.Generator, count: int) -> list[torch.Tensor]:
    """LAMP's discrete moves on one sample: swap two tokens, move a token, move a span."""
    t = row.numel()
    out = []
    for _ in range(count):
        kind = int(torch.randint(3, (1,), generator=rng))
        i, j = (int(v) for v in torch.randint(t, (2,), generator=rng))
        new = row.clone()
        if kind == 0:
            new[i], new[j] = row[j], row[i]
        elif kind == 1:
            token = row[i]
            rest = torch.cat([row[:i], row[i + 1:]])
            new = torch.cat([rest[:j], token.view(1), rest[j:]])
        else:
            a, b = min(i, j), max(i, j) + 1
            span, rest = row[a:b], torch.cat([row[:a], row[b:]])
            k = int(torch.randint(rest.numel() + 1, (1,), generator=rng))
            new = torch.cat([rest[:k], span, rest[k:]])
        out.append(new)
    return out


@register_attack
class Lamp(Attack):
    name = "lamp"
    summary = ("LAMP-style order recovery: gradient matching in embedding space over the recovered token set, "
               "projected to tokens, discrete swaps scored with the model's own language-model prior")
    modalities = ("text",)
    budgets = {"quick": AttackSettings(iterations=200, restarts=1, lr=0.05, tv=0.0,
                                       extra={"lm_prior": 0.05, "discrete_every": 50, "moves": 24, "tau": 0.5}),
               "standard": AttackSettings(iterations=400, restarts=2, lr=0.05, tv=0.0,
                                          extra={"lm_prior": 0.05, "discrete_every": 50, "moves": 32, "tau": 0.5}),
               "thorough": AttackSettings(iterations=2000, restarts=4, lr=0.05, tv=0.0,
                                          extra={"lm_prior": 0.05, "discrete_every": 100, "moves": 64,
                                                 "tau": 0.5})}

    def skip_reason(self, findings: Findings | None, module: nn.Module | None) -> str | None:
        return _text_skip(findings, module)

    def run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
            seed: int | None, observer: Observer) -> Reconstruction:
        # cuDNN's fused LSTM has no double backward: a zoo nn.LSTM runs torch's own kernels for the attack
        with torch.backends.cudnn.flags(enabled=False):
            return self._run(target, settings, device=device, seed=seed, observer=observer)

    def _run(self, target: AttackTarget, settings: AttackSettings, *, device: torch.device,
             seed: int | None, observer: Observer) -> Reconstruction:
        start = time.perf_counter()
        emb, grad = embedding_gradient(target)
        if emb is None:
            raise ValueError("lamp needs a model with a token embedding")
        notes = []
        tokens = batch_tokens(target, emb, grad) if grad is not None else []
        if tokens:
            notes.append(f"candidate tokens: the {len(tokens)} of the token set (embedding gradient)")
        else:
            tokens = list(range(emb.vocab_size))
            notes.append(f"{FROZEN}; candidate tokens: the whole vocabulary ({emb.vocab_size})")
        pb = _Problem(target, emb, tokens, device)
        if pb.task == "next-token":
            notes.append("targets: the candidate's own next tokens; prior: the model's next-token loss "
                         f"x {settings.extra.get('lm_prior', 0.2)}")
        else:
            notes.append("no language-model prior (a classifier)" +
                         ("" if pb.labels is not None else "; labels unknown: the model's most likely class"))
        extra = settings.extra
        lm_prior, every = float(extra.get("lm_prior", 0.2)), max(1, int(extra.get("discrete_every", 50)))
        moves, tau = int(extra.get("moves", 32)), float(extra.get("tau", 0.5))
        sweeps = int(extra.get("sweeps", 1))
        budget_s = float(extra["seconds"]) if extra.get("seconds") is not None else None
        gen = torch.Generator().manual_seed(int(seed or 0))
        best: _State | None = None
        guess = list(pb.lengths)
        losses: list[float] = []
        iterations = 0
        stopped = False
        starts: list[int] = []
        if pb.task == "next-token":
            pb.continuations = list(self._continue(pb, pb.allowed))
        if pb.task == "next-token" and grad is not None:
            targets = set(target_tokens(target, emb.vocab_size))
            starts = [t for t in recovered_tokens(grad) if t not in targets and t != pb.pad]
        for restart in range(max(1, settings.restarts)):
            init = pb.allowed[torch.randint(len(pb.allowed), (pb.n, pb.t), generator=gen).to(device)]
            if restart == 0 and pb.task == "next-token":
                init = self._lm_start(pb, starts, gen)
            z = pb.table[init].clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=float(settings.lr))
            current: _State | None = None
            pb.lengths = list(guess)
            for it in range(1, int(settings.iterations) + 1):
                opt.zero_grad()
                loss = pb.continuous(z, tau)
                loss.backward()
                opt.step()
                iterations += 1
                if it % every == 0 or it == settings.iterations:
                    current = self._discrete_round(pb, pb.project(z.detach()), current, lm_prior, moves, gen,
                                                   sweeps)
                    with torch.no_grad():
                        z.copy_(pb.table[current.full])  # continue from the best discrete candidate (as LAMP does)
                    total = int(settings.iterations) * max(1, settings.restarts)
                    observer.attack_progress(AttackProgress(self.name, iterations, total, current.score))
                if observer.should_stop() or (budget_s is not None and time.perf_counter() - start > budget_s):
                    stopped = True
                    break
            if current is None:
                current = self._discrete_round(pb, pb.project(z.detach()), None, lm_prior, moves, gen, sweeps)
            losses.append(current.score)
            if best is None or current.score < best.score:
                best = current
            if stopped:
                notes.append(f"stopped at its time share after {iterations} iterations")
                break
        assert best is not None
        return Reconstruction(attack=self.name, x=pb.padded(best.full, best.lengths).cpu(), labels=target.labels,
                              attack_loss=best.score,
                              settings=settings, seconds=time.perf_counter() - start, iterations_run=iterations,
                              stopped_early=stopped, notes=tuple(notes), restart_losses=tuple(losses),
                              best_restart=losses.index(best.score), device=str(device))

    @staticmethod
    @torch.no_grad()
    def _continue(pb: _Problem, first: torch.Tensor, avoid: set[int] | None = None) -> torch.Tensor:
        """A next-word model's own greedy continuation of each first token, restricted to the allowed tokens;
        tokens in ``avoid`` (the batch's other lines') are penalised, since each token of the set is in some
        line."""
        ids = first.view(-1, 1).expand(-1, pb.t).clone()
        mask = torch.full((pb.table.shape[0],), float("-inf"), device=pb.device)
        mask[pb.allowed] = 0.0
        if avoid:
            mask[torch.tensor(sorted(avoid), device=pb.device)] -= AVOID_PENALTY
        for t in range(1, pb.t):
            ids[:, t] = (pb.model(ids)[:, t - 1] + mask).argmax(-1)
        return ids

    @staticmethod
    def _lm_start(pb: _Problem, starts: list[int], gen: torch.Generator) -> torch.Tensor:
        """Each line started from a likely first token (a token of the embedding's gradient that is nobody's
        target: a line's first token is an input only) and continued by the model."""
        first = pb.allowed[torch.randint(len(pb.allowed), (pb.n,), generator=gen).to(pb.device)]
        for i, token in enumerate(starts[: pb.n]):
            first[i] = token
        return Lamp._continue(pb, first)

    @staticmethod
    def _ends(pb: _Problem, best: _State, i: int, score) -> _State:
        """A next-word model's line ``i`` ended at the best position (padding from there on)."""
        if pb.task != "next-token" or pb.pad is None:
            return best
        for k in range(2, pb.t + 1):
            lengths = list(best.lengths)
            lengths[i] = k
            value = score(best.full, lengths)
            if value < best.score:
                best = _State(value, best.full, lengths)
        return best

    @staticmethod
    def _discrete_round(pb: _Problem, ids: torch.Tensor, current: _State | None, lm_prior: float, moves: int,
                        gen: torch.Generator, sweeps: int = 1) -> _State:
        """The better of the projection and the current best, then improved by LAMP's moves, by ``sweeps``
        passes of coordinate search (each position's best allowed token) and, for a next-word model, by where
        each line ends -- one sample at a time."""
        def score(full: torch.Tensor, lengths: list[int]) -> float:
            dist, prior = pb.discrete(pb.padded(full, lengths), lm_prior)
            return dist + lm_prior * prior

        lengths = list(current.lengths) if current is not None else list(pb.lengths)
        best = _State(score(ids, lengths), ids, lengths)
        if current is not None and current.score < best.score:
            best = current
        for i in range(pb.n):
            best = Lamp._ends(pb, best, i, score)
            # the whole line replaced by the model's own continuation of a token: every continuation scored at
            # the line's current length, the three best also at every length
            tried = []
            others = {int(v) for j in range(pb.n) if j != i for v in best.full[j, : best.lengths[j]]}
            rows = list(pb.continuations)
            if others and pb.task == "next-token":  # a classifier has no continuation of its own
                rows += list(Lamp._continue(pb, pb.allowed, others))
            for row in rows:
                cand = best.full.clone()
                cand[i] = row
                tried.append((score(cand, best.lengths), cand))
            for value, cand in sorted(tried, key=lambda vc: vc[0])[:3]:
                found = Lamp._ends(pb, _State(value, cand, best.lengths), i, score)
                if found.score < best.score:
                    best = found
            for row in transformations(best.full[i].cpu(), gen, moves):
                cand = best.full.clone()
                cand[i] = row.to(cand.device)
                value = score(cand, best.lengths)
                if value < best.score:
                    best = _State(value, cand, best.lengths)
            for _ in range(sweeps):  # each position's best allowed token, the others fixed
                improved = False
                for pos in range(best.lengths[i]):
                    for token in pb.allowed.tolist():
                        if int(best.full[i, pos]) == token:
                            continue
                        cand = best.full.clone()
                        cand[i, pos] = token
                        value = score(cand, best.lengths)
                        if value < best.score:
                            best, improved = _State(value, cand, best.lengths), True
                if not improved:
                    break
            best = Lamp._ends(pb, best, i, score)
        pb.lengths = list(best.lengths)
        return best


@dataclass(frozen=True)
class _State:
    score: float
    full: torch.Tensor  # (N, T) token at every position, padding not applied
    lengths: list[int]
