"""Example streams of generated instructions, for the strategies that replace a stage's new
examples with them (``xling``, ``mlm``): the stream of a generated list, and the same stream
with its examples re-drawn after the first epoch (masks and spans drawn again)."""
from __future__ import annotations

import random

from ..data import ExampleStream
from ..seeds import derive_seed
from . import chat_setting, encode_all, encode_one
from .xling import Builder, redraw


class RedrawStream(ExampleStream):
    """An ExampleStream whose examples after the first epoch are re-drawn (``remake(raw
    example, rng)`` -> encoded example), seeded by (seed, epoch, index): its state is still
    only (epoch, position), so resuming is exact."""

    def __init__(self, encoded, raw: list[dict], remake, seed: int, name: str):
        super().__init__(encoded, seed, name=name)
        self.raw, self.remake = raw, remake

    def __next__(self) -> dict:
        example = super().__next__()
        if self.epoch == 0:
            return example
        i = self._order[self.position - 1]
        return self.remake(self.raw[i], random.Random(derive_seed(self.seed, "", f"redraw/{self.epoch}/{i}")))


def replace_stream(examples: list[dict], notes: dict, ctx, name: str,
                   loss_on_prompt: bool = False) -> ExampleStream:
    ctx.notes.update(notes)
    ctx.notes[f"{name}_examples_total"] = len(examples)
    encoded = encode_all(examples, ctx.tokenizer, int(ctx.train.max_length), chat_setting(ctx.config), loss_on_prompt)
    return ExampleStream(encoded, ctx.seed_for("data"), name=f"stage {ctx.name} ({name})")


def redrawn(stream: ExampleStream, examples: list[dict], opts, ctx, loss_on_prompt: bool) -> RedrawStream:
    """``stream`` with its examples re-drawn after the first epoch (options ``opts``: templates,
    max_span, mask)."""
    max_length = int(ctx.train.max_length)
    builder = Builder(opts.template_data, opts.prompt_languages, ctx.languages)

    def remake(example: dict, rng: random.Random) -> dict:
        return encode_one(redraw(example, builder, opts, rng), ctx.tokenizer, max_length,
                          chat_setting(ctx.config), loss_on_prompt)

    return RedrawStream(stream.examples, examples, remake, stream.seed, stream.name)
