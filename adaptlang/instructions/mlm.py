"""Monolingual denoising instructions (``mlm``): Instruct-Align section 4.4's baseline,
"continual instruction-tuned baselines that incorporate only monolingual denoising
instructions, which is comparable to performing language adaptation using masked language
modeling (MLM)".

A sentence Y of a new language is perturbed with g_word or g_span (drawn at random per
sentence, as in ``perturb``) and the instruction asks for the complete sentence:
prompt h_md(g(Y), T_md), target Y. No second language is involved.

Text (option ``text``), the new languages' text only, evaluation text never:
  * ``flores``: the new language's side of the FLORES-200 pool (lines 0-499; all 1012 lines
    when no benchmark of the run reads 500-1011, bitext.flores_part), i.e. the same sentences
    ``xling`` aligns, so the two compare on equal data (default);
  * ``nusax`` (opt-in): the new language's column of NusaX MT train+valid (never test); these
    are the NusaX sentiment train/valid sentences, i.e. the evaluation's domain;
  * ``train``:  the language's training text (NTREX-128 or ``data.train_files.<code>``,
    ``data.max_lines_per_language`` lines).
Sentences that are evaluation sentences of their language are dropped and counted.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..sources import line_limit, read_text, training_source
from ..errors import UserError, listing
from ..languages import LanguageSet
from . import register_source
from .bitext import _flores, evaluation_sentences, flores_part, nusax_columns, nusax_sentences, NUSAX_TRAIN_SPLITS
from .xling import Builder, _choices, _sample, check_prompt_languages, load_xling_templates, monolingual_example, \
    options_from_config

TEXTS = ("flores", "nusax", "train")


@dataclass
class MlmOptions:
    """The options of the ``mlm`` strategy; their defaults are in configs/strategy/mlm.yaml
    (``MlmOptions.defaults(**overrides)``)."""

    text: list
    prompt_languages: list
    max_span: int
    mask: str
    max_sentences: int | None
    templates: str
    redraw: bool

    @classmethod
    def defaults(cls, **overrides) -> "MlmOptions":
        return cls(**{**options_from_config(None, "mlm"), **overrides})

    def __post_init__(self):
        where = "strategy.mlm"
        self.text = _choices("text", self.text, TEXTS, where)
        if not self.text:
            raise UserError(f"{where}.text is empty. Valid: {listing(TEXTS)}")
        self.max_span = int(self.max_span)
        if self.max_span < 2:
            raise UserError(f"{where}.max_span={self.max_span}: a span has at least 2 words")
        if self.max_sentences is not None and int(self.max_sentences) < 1:
            raise UserError(f"{where}.max_sentences={self.max_sentences}: must be >= 1 or null")
        self.mask = str(self.mask or "")
        if not isinstance(self.redraw, bool):
            raise UserError(f"{where}.redraw={self.redraw!r}: true or false")
        self.template_data = load_xling_templates(str(self.templates))
        self.prompt_languages = check_prompt_languages(self.prompt_languages, self.template_data, where)


def sentences(code: str, langs: LanguageSet, text: list[str], cfg) -> list[tuple[str, str]]:
    """(sentence, origin) of one language from the chosen texts, in order, deduplicated."""
    lang = langs.check(code)
    out: list[tuple[str, str]] = []
    if "flores" in text and lang.flores:
        out += [(s, f"flores:{i}") for i, s in enumerate(_flores(lang.flores, flores_part(cfg)))]
    if "nusax" in text and code in nusax_columns():
        for split in NUSAX_TRAIN_SPLITS:
            out += [(s, f"nusax-{split}:{i}") for i, s in enumerate(nusax_sentences(code, split)) if s]
    if "train" in text and cfg is not None:
        source, _ = training_source(code, langs, cfg)
        if source is not None:
            out += [(s, f"train:{i}") for i, s in enumerate(read_text(source, line_limit(cfg)))]
    seen: set[str] = set()
    unique = []
    for s, origin in out:
        if s not in seen:
            seen.add(s)
            unique.append((s, origin))
    return unique


def generate(new: list[str], langs: LanguageSet, opts: MlmOptions, seed: int, cfg=None) -> tuple[list[dict], dict]:
    builder = Builder(opts.template_data, opts.prompt_languages, langs)
    examples: list[dict] = []
    counts: dict[str, int] = {}
    missing: dict[str, str] = {}
    dropped = too_short = 0
    for y in new:
        evaluation = evaluation_sentences(y, langs.check(y).flores, flores_part(cfg))
        texts = sentences(y, langs, opts.text, cfg)
        kept = [(s, o) for s, o in texts if s not in evaluation]
        dropped += len(texts) - len(kept)
        kept = _sample(kept, opts.max_sentences, random.Random(f"{seed}|{y}|mono-sentences"))
        if not kept:
            missing[y] = f"no {'/'.join(opts.text)} text"
            continue
        rng = random.Random(f"{seed}|{y}|monolingual")
        for s, origin in kept:
            ex = monolingual_example(builder, rng, y, s, opts.max_span, opts.mask, origin)
            if ex is None:
                too_short += 1
                continue
            examples.append(ex)
            counts[y] = counts.get(y, 0) + 1
    notes = {"mlm_sentences": counts, "mlm_dropped_evaluation_overlap": dropped, "mlm_too_short": too_short}
    if missing:
        notes["mlm_missing"] = missing
    return examples, notes


@register_source("mlm")
def mlm_source(languages, cfg, seed) -> list[dict]:
    """Monolingual denoising instructions for ``languages`` (options: strategy.mlm)."""
    langs = LanguageSet.from_config(cfg.languages)
    examples, _ = generate(list(languages), langs, MlmOptions(**options_from_config(cfg, "mlm")), seed, cfg)
    return examples
