"""How many tokens a language's training text holds, known before anything trains: the plan's
check of ``data.mixture.repeat: false`` (a text stage may not need more of a language's text
than the text has).

A language's text is counted as the run will read it (``data.max_lines_per_language`` rows):
its characters exactly, its tokens exactly when it has at most ``EXACT_ROWS`` rows (every row
tokenized, cut into blocks as ``adaptlang.data.lm_examples`` cuts them with one process), else
estimated from the tokens per character of ``SAMPLE_ROWS`` rows spread evenly over it. The
tokenizer is the run's own: a local checkpoint's, or for a model built from config the
sentencepiece model trained as the run trains it (seeded, about a second on the tiny default);
a stage after a vocabulary change (strategy vocab) is counted with the tokenizer the run starts
with.
A hub source, or a hub checkpoint whose tokenizer is not on disk, is checked when its stage
starts (``adaptlang.stage_runner``), the exact check that stays behind this one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow.compute as pc

from .data import CUT_ROWS, token_ids
from .errors import UserError
from .mixture import target_shares
from .sources import line_limit, text_dataset, training_source

EXACT_ROWS = 5000
SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class TextSize:
    rows: int
    chars: int
    tokens: int  # with one EOS per row
    blocks: int
    exact: bool

    def describe(self, block_size: int) -> str:
        about = "" if self.exact else "about "
        return f"{about}{self.tokens:,} tokens ({self.rows:,} rows, {about}{self.blocks:,} blocks of {block_size})"


def _lengths(ids: list[list[int]]) -> list[int]:
    return [len(x) + 1 for x in ids]  # + EOS


def text_size(text, tokenizer, block_size: int) -> TextSize:
    """Rows, characters, tokens and LM blocks of ``text`` (a Dataset with a ``text`` column)."""
    rows = len(text)
    chars = sum(pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0
                for batch in text.with_format("arrow").iter(batch_size=10_000))
    if rows <= EXACT_ROWS:
        lengths = _lengths(token_ids(tokenizer, text["text"]))
        blocks = sum(sum(lengths[i:i + CUT_ROWS]) // block_size for i in range(0, rows, CUT_ROWS))
        return TextSize(rows, chars, sum(lengths), blocks, True)
    sample = list(text.select([i * rows // SAMPLE_ROWS for i in range(SAMPLE_ROWS)])["text"])
    sample_tokens = sum(len(x) for x in token_ids(tokenizer, sample))
    tokens = round(chars * sample_tokens / max(1, sum(len(t) for t in sample))) + rows
    dropped = math.ceil(rows / CUT_ROWS) * block_size // 2  # each group's remainder, half a block on average
    return TextSize(rows, chars, tokens, max(0, tokens - dropped) // block_size, False)


def check_budgets(plan, tokenizer=None) -> list[str]:
    """Refuse (one line) a text stage with ``data.mixture.repeat: false`` that needs more of a
    language's text than it has; returns the notes of what could not be checked here."""
    stages = [s for s in plan.stages if s.kind == "text" and s.mixture is not None and not s.mixture.repeat]
    if not stages:
        return []
    tokenizer = tokenizer if tokenizer is not None else plan_tokenizer(plan)
    if tokenizer is None:
        return [f"data.mixture.repeat=false: the text budgets are checked when each stage starts (the tokenizer of "
                f"{plan.config.model.name_or_path} is not on this machine yet)"]
    notes, sizes = [], {}
    for stage in stages:
        block_size = int(stage.train["block_size"])
        available = {}
        for code in [*stage.languages, *stage.replay_languages]:
            source, _ = training_source(code, plan.languages, plan.config)
            if source is None:
                continue
            if source.startswith("hub:"):
                notes.append(f"stage '{stage.name}': {code}'s text ({source}) is counted when the stage starts")
                continue
            key = (source, block_size)
            if key not in sizes:
                sizes[key] = text_size(text_dataset(source, line_limit(plan.config)), tokenizer, block_size)
            available[code] = sizes[key]
        _refuse_overdraw(stage, available)
    return notes


def _refuse_overdraw(stage, sizes: dict[str, TextSize]) -> None:
    block_size = int(stage.train["block_size"])
    draws = stage.block_draws
    own = [c for c in stage.languages if c in sizes]
    past = [c for c in stage.replay_languages if c in sizes]
    if not stage.mixture.active:  # one concatenated stream: every language runs out together
        refuse_short_stream(stage, own, sum(s.blocks for s in sizes.values()), all(s.exact for s in sizes.values()))
        return
    shares = target_shares({c: s.blocks * block_size for c, s in sizes.items()}, stage.mixture, own, past)
    for code, share in shares.items():
        needed = math.ceil(share * draws)
        if needed > sizes[code].blocks:
            raise UserError(f"stage '{stage.name}': language {code} has {sizes[code].describe(block_size)} but the "
                            f"stage's budget takes {needed * block_size:,} of it ({share:.1%} of {draws * block_size:,}) "
                            "and data.mixture.repeat=false; give fewer steps/tokens, more text, or repeat=true")


def refuse_short_stream(stage, codes, blocks: int, exact: bool = True) -> None:
    """Refuse (one line) an unmixed text stage with ``data.mixture.repeat: false`` that draws more
    blocks than its text (``codes``, concatenated) holds: by the plan, and again at the stage start."""
    if stage.block_draws > blocks:
        block_size = int(stage.train["block_size"])
        raise UserError(f"stage '{stage.name}': data.mixture.repeat=false, but it needs "
                        f"{stage.block_draws * block_size:,} tokens and its text ({' '.join(codes)}) has "
                        f"{'' if exact else 'about '}{blocks * block_size:,} in blocks of {block_size}; give fewer "
                        "steps/tokens, more text, or repeat=true")


def plan_tokenizer(plan):
    """The run's tokenizer, before the run: a local checkpoint's (read by the plan), a hub
    checkpoint's when it is cached on disk, or the one trained for a model built from config."""
    from .models import tokenizer_from_config

    if plan.base_tokenizer is not None:
        return plan.base_tokenizer
    model = plan.config.model
    if not model.get("name_or_path"):
        return tokenizer_from_config(plan.config, plan.languages)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model.name_or_path), local_files_only=True,
                                             trust_remote_code=bool(model.get("trust_remote_code")))
    except Exception:  # noqa: BLE001 -- not cached: the stage start counts exactly
        return None
