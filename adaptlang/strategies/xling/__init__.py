"""Alignment-based cross-lingual instructions (``xling``), Instruct-Align section 3.1.

In the stages it acts in (default: ``instruct``), the stage's new examples become the
instructions generated from bitext between the known languages X (``known``) and the
stage's languages Y (``data.languages``): word- and span-level conditional denoising and
sentence-level translation (adaptlang.instructions.xling). Composed with ``replay``
(``strategy=xling+replay``), replay interleaves its r past examples 1:1 with these:
replay sets up in a later phase ("mixture", after "examples") so that it wraps the generated
stream.

The paper's ablations (section 6.1, Table 5) are values of ``objectives``:
  [word, span]                           conditional denoising only
  [sentence]                             machine translation only
  [word, span, sentence]                 (IA)1 (default)
  [word, span, sentence, monolingual]    (IA)1 + monolingual
(monolingual denoising alone is the ``mlm`` strategy; xling and mlm both own
``data.new_examples`` and are refused together: use the objectives list to mix them.)
"""
from __future__ import annotations

from ...errors import UserError
from ...instructions.bitext import flores_part
from ...instructions.streams import redrawn, replace_stream
from ...instructions.xling import XlingOptions, generate
from ...strategy import StageContext, Strategy, register_strategy


@register_strategy("xling")
class CrossLingualInstructions(Strategy):
    """New data = word/span conditional denoising + translation instructions from bitext (IA 3.1)."""

    owns = frozenset({"data.new_examples"})
    phase = "examples"
    builds_examples = True

    def __init__(self, objectives, bitext, known, files, directions, prompt_languages, max_span: int,
                 mask: str, max_pairs, templates: str, loss_on_prompt: bool, redraw: bool, mix: str,
                 perturbation: str):
        self.options = XlingOptions(list(objectives), list(bitext), list(known), list(files), list(directions),
                                    list(prompt_languages), max_span, mask, max_pairs, templates, loss_on_prompt,
                                    redraw, mix, perturbation)

    @classmethod
    def check_plan(cls, plan, me) -> None:
        for code in me.options.get("known") or []:
            plan.languages.check(str(code), where="strategy.xling.known")

    def setup_data(self, stream, ctx: StageContext):
        codes = ctx.stage_languages
        examples, notes = generate(codes, ctx.languages, self.options, ctx.seed_for("instructions/xling"),
                                   flores_part(ctx.config))
        if not examples:
            raise UserError(f"xling: no instructions for stage '{ctx.name}' languages {codes} "
                                         f"(known={self.options.known}, bitext={self.options.bitext}): {notes}")
        stream = replace_stream(examples, notes, ctx, "xling", self.options.loss_on_prompt)
        if not self.options.redraw:
            return stream
        return redrawn(stream, examples, self.options, ctx, self.options.loss_on_prompt)
