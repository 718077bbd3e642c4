"""Monolingual denoising instructions (``mlm``), Instruct-Align section 4.4's baseline.

In the stages it acts in (default: ``instruct``), the stage's new examples become
monolingual denoising instructions (g_word / g_span of a sentence of a stage language ->
the sentence; adaptlang.instructions.mlm), on the new languages' text only. Composes with
``replay`` (replay wraps its stream). Conflicts with ``xling`` (both own
``data.new_examples``): the paper's "(IA)1 + monolingual" mixture is
``strategy=xling strategy.xling.objectives=[word,span,sentence,monolingual]``.
"""
from __future__ import annotations

from ...errors import UserError
from ...instructions.mlm import MlmOptions, generate
from ...instructions.streams import redrawn, replace_stream
from ...strategy import StageContext, Strategy, register_strategy


@register_strategy("mlm")
class MonolingualDenoising(Strategy):
    """New data = monolingual denoising instructions on the new languages (IA 4.4 baseline)."""

    owns = frozenset({"data.new_examples"})
    phase = "examples"
    builds_examples = True

    def __init__(self, text, prompt_languages, max_span: int, mask: str, max_sentences, templates: str, redraw: bool):
        self.options = MlmOptions(list(text), list(prompt_languages), max_span, mask, max_sentences, templates, redraw)

    def setup_data(self, stream, ctx: StageContext):
        codes = ctx.stage_languages
        examples, notes = generate(codes, ctx.languages, self.options, ctx.seed_for("instructions/mlm"), ctx.config)
        if not examples:
            raise UserError(f"mlm: no text for stage '{ctx.name}' languages {codes}: {notes}")
        stream = replace_stream(examples, notes, ctx, "mlm")
        return redrawn(stream, examples, self.options, ctx, False) if self.options.redraw else stream
