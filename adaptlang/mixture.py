"""Language mixtures of a language-modelling stage: target shares, token budgets, replay of
past languages' text, and the stream that realizes the shares.

A stage mixes its languages when ``data.mixture`` (or the stage's own ``data.mixture``) sets
``alpha``, ``weights`` or ``replay``; otherwise its text is concatenated and shuffled as before
(a language's share is then its share of the text).

* ``alpha``: p_i ∝ n_i^alpha over the stage's languages, n_i the tokens available (1 =
  proportional, 0 = uniform; temperature sampling, e.g. XLM-R's alpha = 0.3);
* ``weights.<code>``: a language's share of the stage's own tokens, fixed; the languages
  without one share the rest by alpha (if every language has one, they are normalised);
* ``replay``: the fraction of the stage's tokens drawn from the text of languages trained in
  earlier language-modelling stages and not in this one (Ibrahim et al. 2024, arXiv
  2403.08763: 1-25% replay with re-warming matched retraining), split among them by alpha;
* ``repeat``: a language may be drawn past the end of its text (epochs counted); false
  refuses a stage whose steps need more of a language than it has.

``MixedStream`` interleaves per-language streams deterministically: each draw takes the
language furthest behind its target (Megatron-LM's BlendedDataset index), so after any
number of draws every language's realized share is within one block of its target, and the
stream's state is the count per language (a resume continues bit-exact).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from omegaconf import OmegaConf

from .data import RELEASE_EVERY, ExampleStream
from .errors import UserError
from .mapped_pages import release_mapped_pages

MIXTURE_KEYS = ("alpha", "weights", "repeat", "replay")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


@dataclass(frozen=True)
class Mixture:
    alpha: float | None = None
    weights: dict = field(default_factory=dict)
    repeat: bool = True
    replay: float = 0.0

    @property
    def active(self) -> bool:
        return self.alpha is not None or bool(self.weights) or self.replay > 0

    def describe(self) -> dict:
        out: dict[str, Any] = {"alpha": 1.0 if self.alpha is None else self.alpha}
        if self.weights:
            out["weights"] = dict(self.weights)
        if self.replay:
            out["replay"] = self.replay
        out["repeat"] = self.repeat
        return out


def _fraction(value, where: str, high: float = 1.0, high_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0 or x > high or (high_open and x >= high):
        bound = f"from 0 to below {high:g}" if high_open else f"from 0 to {high:g}"
        raise UserError(f"{where}={value!r}: expected a number {bound}")
    return x


def mixture_of(global_mixture, stage_mixture, where: str) -> Mixture:
    """The stage's mixture: ``data.mixture`` with the stage's own ``data.mixture`` over it."""
    merged: dict = {}
    for source, prefix in ((global_mixture, "data.mixture"), (stage_mixture, f"{where}: data.mixture")):
        own = OmegaConf.to_container(source, resolve=True) if OmegaConf.is_config(source) else dict(source or {})
        for key in own:
            if key not in MIXTURE_KEYS:
                raise UserError(f"{prefix}.{key}: unknown key. Valid: {', '.join(MIXTURE_KEYS)}")
        if own.get("weights") is not None and not isinstance(own["weights"], dict):
            raise UserError(f"{prefix}.weights: expected language code -> share, e.g. {prefix}.weights.en=0.25")
        merged.update({k: v for k, v in own.items() if k != "weights"})
        merged.setdefault("weights", {}).update(own.get("weights") or {})
    alpha = merged.get("alpha")
    alpha = None if alpha is None else _fraction(alpha, "data.mixture.alpha")
    weights = {str(c): _fraction(w, f"data.mixture.weights.{c}") for c, w in (merged.get("weights") or {}).items()}
    replay = _fraction(merged.get("replay") or 0.0, "data.mixture.replay", high_open=True)
    repeat = merged.get("repeat", True)
    if not isinstance(repeat, bool):
        raise UserError(f"data.mixture.repeat={repeat!r}: expected true or false")
    return Mixture(alpha, weights, repeat, replay)


def check_weights(mixture: Mixture, stage: str, codes) -> None:
    """Weights name only the stage's languages and leave room for the others."""
    unknown = sorted(set(mixture.weights) - set(codes))
    if unknown:
        raise UserError(f"stage '{stage}': data.mixture.weights names {', '.join(unknown)}, not among the stage's "
                        f"languages ({' '.join(codes)}); give weights only to them (a stage's own data.mixture)")
    unweighted = set(codes) - set(mixture.weights)
    if unweighted and sum(mixture.weights.values()) > 1 + 1e-9:
        raise UserError(f"stage '{stage}': data.mixture.weights sum to {sum(mixture.weights.values()):g} > 1, "
                        f"leaving nothing for {' '.join(sorted(unweighted))}")


def parse_tokens(value, where: str) -> int:
    """A token budget: an integer, or a number with k, M or B (``50M``, ``1.5B``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMbBgG]?)\s*", str(value))
        if not match:
            raise UserError(f"{where}={value!r}: expected a number of tokens, e.g. 50M, 1.5B, 200k or 100000")
        number, unit = float(match.group(1)), match.group(2).lower()
    tokens = int(number * _SUFFIX[unit])
    if tokens < 1:
        raise UserError(f"{where}={value!r}: expected at least one token")
    return tokens


def tokens_per_step(train: dict) -> int:
    """Tokens of one optimizer step of a language-modelling stage (every block is full)."""
    return int(train["batch_size"]) * int(train.get("grad_accum", 1)) * int(train["block_size"])


def target_shares(available: dict[str, int], mixture: Mixture, own: list[str], past: list[str]) -> dict[str, float]:
    """Each language's target share of the stage's tokens (summing to 1).

    ``available``: tokens of text per language; ``own``: the stage's languages, ``past``: those
    replayed (``mixture.replay`` of the tokens, split by alpha)."""
    alpha = 1.0 if mixture.alpha is None else mixture.alpha

    def by_alpha(codes: list[str], total: float) -> dict[str, float]:
        mass = {c: float(available[c]) ** alpha for c in codes}
        norm = sum(mass.values())
        return {c: total * m / norm for c, m in mass.items()} if norm > 0 else {}

    replay = mixture.replay if past else 0.0
    fixed = {c: w for c, w in mixture.weights.items() if c in own}
    rest = [c for c in own if c not in fixed]
    if fixed and not rest:
        norm = sum(fixed.values()) or 1.0
        shares = {c: (1 - replay) * w / norm for c, w in fixed.items()}
    else:
        shares = {c: (1 - replay) * w for c, w in fixed.items()}
        shares.update(by_alpha(rest, (1 - replay) * (1 - sum(fixed.values()))))
    shares.update(by_alpha(past, replay))
    return {c: shares.get(c, 0.0) for c in [*own, *past]}


class MixedStream:
    """Examples from per-language streams in target shares: each draw takes the language whose
    count is furthest below ``share * draws`` (ties: the earlier language), as Megatron-LM's
    BlendedDataset builds its index. ``tokens`` per example are counted per language."""

    def __init__(self, streams: dict[str, ExampleStream], shares: dict[str, float], name: str = "data"):
        self.codes = [c for c in streams if shares.get(c, 0.0) > 0]
        if not self.codes:
            raise UserError(f"{name}: every language's target share is 0")
        self.streams, self.shares, self.name = streams, shares, name
        for stream in streams.values():
            stream.release_every = 0  # released together, every RELEASE_EVERY draws of the mixture
        self.counts = {c: 0 for c in self.codes}
        self.tokens = {c: 0 for c in self.codes}
        self.drawn = 0

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        self.drawn += 1
        if self.drawn % RELEASE_EVERY == 0:
            for stream in self.streams.values():
                release_mapped_pages(stream.examples)
        code = max(self.codes, key=lambda c: self.shares[c] * self.drawn - self.counts[c])
        self.counts[code] += 1
        example = next(self.streams[code])
        self.tokens[code] += len(example["input_ids"])
        return example

    def __len__(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def realized(self) -> dict:
        """tokens_by_language, target and realized shares, epochs drawn per language."""
        total = sum(self.tokens.values()) or 1
        return {"tokens_by_language": dict(self.tokens),
                "target_shares": {c: round(self.shares[c], 4) for c in self.codes},
                "realized_shares": {c: round(t / total, 4) for c, t in self.tokens.items()},
                "epochs_by_language": {c: round(self.counts[c] / len(self.streams[c]), 3) for c in self.codes}}

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "counts": dict(self.counts), "tokens": dict(self.tokens),
                "streams": {c: self.streams[c].state_dict() for c in self.codes}}

    def load_state_dict(self, state: dict) -> None:
        self.drawn, self.counts, self.tokens = state["drawn"], dict(state["counts"]), dict(state["tokens"])
        for code, own in state["streams"].items():
            self.streams[code].load_state_dict(own)
