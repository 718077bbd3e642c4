"""Alignment-based cross-lingual instructions, Instruct-Align ((IA)1) section 3.1, Table 1.

From a parallel pair (X in a known language, Y in a new one):

* ``word``     conditional denoising: prompt h_cd(X, g_word(Y), T_cd), target Y;
* ``span``     conditional denoising: prompt h_cd(X, g_span(Y), T_cd), target Y;
* ``sentence`` machine translation:   prompt h_mt(X, T_mt),            target Y;
* ``monolingual`` denoising without X (g(Y) -> Y, word or span drawn at random), the
  paper's baseline (section 4.4), here so that the ablation "(IA)1 + monolingual"
  (section 6.1, Table 5) is one list: ``objectives: [word, span, sentence, monolingual]``.

Each pair gives one example per objective (and per direction), with a template drawn at
random from the template set (``templates``) among the prompt languages asked for:
``templates/xling.yaml`` is adaptlang's own set (English and Indonesian; the paper's
evaluation prompts are in both, its training prompts are not printed);
``templates/xling_authors.yaml`` is the authors' released training prompts (English, from
prompt_utils.py of HLTCHKUST/InstructAlign), with ``loss_on_prompt: true`` to train on the
whole prompt as their decoder-model code does. Generation is deterministic:
every (seed, X language, Y language, direction, objective) has its own seeded generator, so
adding a language does not change the others' examples.

Re-drawing (``redraw``, default true): the paper does not say whether the perturbation is
drawn once; the authors' released code (run_t2t_finetuning.py) perturbs and picks the prompt
inside a ``datasets`` ``set_transform``, i.e. anew every time an example is read. With
``redraw: true`` the first epoch uses the generated examples (what ``adaptlang instructions``
exports) and every later epoch re-draws each example's template and removed word/span,
seeded by (seed, epoch, example), so a resumed run continues exactly; ``false``: the same
examples every epoch.

The authors' released code (run_t2t_finetuning.py) as options beside adaptlang's choices:
``mix: one`` gives each pair (and direction) one objective drawn at random, as the release's
``random.choice`` over augmentation types (``each``, the default: one example per objective, so
with [word, span, sentence] denoising outnumbers translation 2:1); ``perturbation: authors``
perturbs with ``perturb.g_authors`` (``___`` infilling, deletion, permutation at p=0.2) instead
of cutting one word (word) or span (span), so that word and span are then the same objective
(the release has one conditional-denoising objective: use [word, sentence]); the release pivots
on English only in both directions: ``known: [en]`` and ``directions: [to_new, from_new]``.
docs/reproduce.md lists the authors' settings together.

Choices where the paper is silent (also in the README): one example per pair and
objective; a span is 2..max_span words; ``directions: [to_new]`` (X -> Y as in Table 1) by
default, ``from_new`` adds the mirrored instructions (Y -> X); the monolingual objective uses
the new-language side of the same pairs (each sentence once).
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from omegaconf import OmegaConf

from ..composition import strategy_defaults
from ..errors import UserError, listing, suggest
from ..languages import LanguageSet
from . import TEMPLATES, register_source
from .bitext import Pair, check_files, check_sources, collect, flores_part, read_aligned
from .perturb import g_authors, g_span, g_word

OBJECTIVES = ("word", "span", "sentence", "monolingual")
DIRECTIONS = ("to_new", "from_new")
MIXES = ("each", "one")
PERTURBATIONS = ("cut", "authors")
# template kind -> (fields it must use, fields it must not use)
KINDS = {
    "denoising": ({"source", "perturbed"}, set()),
    "translation": ({"source"}, {"perturbed"}),
    "monolingual": ({"perturbed"}, {"source", "src_name"}),
}
FIELDS = {"src_name", "tgt_name", "source", "perturbed"}
KIND_OF = {"word": "denoising", "span": "denoising", "sentence": "translation", "monolingual": "monolingual"}


def _choices(name: str, values, valid, where: str) -> list[str]:
    values = [str(v) for v in (values or [])]
    for v in values:
        if v not in valid:
            raise UserError(f"{where}.{name}: unknown value '{v}'.{suggest(v, valid)} Valid: {listing(valid)}")
    if len(set(values)) != len(values):
        raise UserError(f"{where}.{name}: {values} lists a value twice")
    return values


def load_xling_templates(name: str) -> dict:
    """Templates by kind, validated: unique ids, known placeholders, the right ones per kind."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else TEMPLATES / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"template file {path} not found (a name in {TEMPLATES} or a .yaml path)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    ids: set[str] = set()
    out: dict[str, Any] = {"names": dict(data.get("names") or {})}
    for kind, (needs, forbids) in KINDS.items():
        items = data.get(kind) or []
        if not items:
            raise UserError(f"{path}: no '{kind}' templates")
        for t in items:
            if not isinstance(t, dict) or not all(t.get(k) for k in ("id", "lang", "prompt")):
                raise UserError(f"{path}: every {kind} template needs id, lang and prompt (got {t!r})")
            if t["id"] in ids:
                raise UserError(f"{path}: template id '{t['id']}' is used twice")
            ids.add(t["id"])
            used = {f for _, f, _, _ in string.Formatter().parse(t["prompt"]) if f is not None}
            bad = used - FIELDS
            if bad or not needs <= used or used & forbids:
                raise UserError(f"{path}: template '{t['id']}' ({kind}) uses {listing(used)}; it must use "
                                f"{listing(needs)}, may use {listing(FIELDS - forbids)}")
        out[kind] = [dict(t) for t in items]
    return out


@dataclass
class XlingOptions:
    """The options of the ``xling`` strategy; their defaults are in configs/strategy/xling.yaml
    (``XlingOptions.defaults(**overrides)``)."""

    objectives: list
    bitext: list
    known: list
    files: list
    directions: list
    prompt_languages: list
    max_span: int
    mask: str
    max_pairs: int | None
    templates: str
    loss_on_prompt: bool
    redraw: bool
    mix: str = "each"
    perturbation: str = "cut"

    @classmethod
    def defaults(cls, **overrides) -> "XlingOptions":
        return cls(**{**options_from_config(None, "xling"), **overrides})

    def __post_init__(self):
        where = "strategy.xling"
        self.objectives = _choices("objectives", self.objectives, OBJECTIVES, where)
        if not self.objectives:
            raise UserError(f"{where}.objectives is empty. Valid: {listing(OBJECTIVES)}")
        self.bitext = check_sources(self.bitext)
        self.known = [str(k) for k in (self.known or [])]
        if not self.known and not self.files:
            raise UserError(f"{where}.known is empty: name the known language(s) X, e.g. [en] (the paper: [en, id])")
        self.files = check_files(self.files)
        for entry in self.files:  # misaligned files fail now, before a run starts training
            read_aligned(entry["source_file"], entry["target_file"], entry["source"], entry["target"])
        self.directions = _choices("directions", self.directions, DIRECTIONS, where) or ["to_new"]
        self.max_span = int(self.max_span)
        if self.max_span < 2:
            raise UserError(f"{where}.max_span={self.max_span}: a span has at least 2 words")
        if self.max_pairs is not None and int(self.max_pairs) < 1:
            raise UserError(f"{where}.max_pairs={self.max_pairs}: must be >= 1 or null")
        self.mask = str(self.mask or "")
        for key, valid in (("mix", MIXES), ("perturbation", PERTURBATIONS)):
            if getattr(self, key) not in valid:
                raise UserError(f"{where}.{key}={getattr(self, key)!r}: expected one of {listing(valid)}")
        for flag in ("loss_on_prompt", "redraw"):
            if not isinstance(getattr(self, flag), bool):
                raise UserError(f"{where}.{flag}={getattr(self, flag)!r}: true or false")
        self.template_data = load_xling_templates(str(self.templates))
        self.prompt_languages = check_prompt_languages(self.prompt_languages, self.template_data, where)


def check_prompt_languages(values, templates: dict, where: str) -> list[str]:
    have = sorted({t["lang"] for kind in KINDS for t in templates[kind]})
    values = _choices("prompt_languages", values, have, where)
    if not values:
        raise UserError(f"{where}.prompt_languages is empty. Valid: {listing(have)}")
    return values


def options_from_config(cfg, name: str) -> dict:
    """A source's options: ``strategy.<name>`` when that strategy is active, else its defaults."""
    strategies = cfg.get("strategy") if cfg is not None else None
    if strategies is not None and name in strategies:
        opts = OmegaConf.to_container(strategies[name], resolve=True)
    else:
        opts = strategy_defaults(name)
    opts = dict(opts)
    opts.pop("stages", None)
    return opts


class Builder:
    """Formats examples; language names in the prompt's language."""

    def __init__(self, templates: dict, prompt_languages: list[str], langs: LanguageSet):
        self.templates = {k: [t for t in templates[k] if t["lang"] in prompt_languages] for k in KINDS}
        self.names = templates["names"]
        self.langs = langs

    def name(self, code: str, prompt_language: str) -> str:
        return (self.names.get(prompt_language) or {}).get(code) or self.langs.check(code).name

    def make(self, granularity: str, rng: random.Random, x: str | None, y: str, source: str | None,
             target: str, perturbed=None, origin: str = "") -> dict:
        t = rng.choice(self.templates[KIND_OF[granularity]])
        space = "" if t["prompt"].endswith(("\n", " ")) else " "  # a prompt ending in a newline is followed directly
        values = {"tgt_name": self.name(y, t["lang"]), "source": source,
                  "src_name": self.name(x, t["lang"]) if x else None,
                  "perturbed": perturbed.text if perturbed else None}
        return {
            "granularity": granularity, "template_id": t["id"], "prompt_language": t["lang"],
            "source_language": x, "target_language": y,
            "prompt": t["prompt"].format(**values), "target": space + target,
            "source_text": source, "target_text": target,
            "perturbed": perturbed.text if perturbed else None,
            "removed": perturbed.removed if perturbed else None,
            "perturbation": (perturbed.kind or ("span" if perturbed.n_words > 1 else "word")) if perturbed else None,
            "origin": origin,
        }


def perturb(kind: str, text: str, rng: random.Random, max_span: int, mask: str, perturbation: str = "cut"):
    """g_word / g_span of ``text`` (``kind``), or the authors' perturbation for either."""
    if perturbation == "authors":
        return g_authors(text, rng)
    return g_word(text, rng, mask) if kind == "word" else g_span(text, rng, max_span, mask)


def monolingual_example(builder: Builder, rng: random.Random, y: str, text: str, max_span: int, mask: str,
                        origin: str, perturbation: str = "cut") -> dict | None:
    """g(Y) -> Y with g = g_word or g_span drawn at random (MLM-like, no second language)."""
    kind = rng.choice(("word", "span"))
    perturbed = perturb(kind, text, rng, max_span, mask, perturbation)
    if perturbed is None and kind == "span":
        perturbed = g_word(text, rng, mask)
    if perturbed is None:
        return None
    return builder.make("monolingual", rng, None, y, None, text, perturbed, origin)


def redraw(example: dict, builder: Builder, opts: XlingOptions, rng: random.Random) -> dict:
    """The same pair and objective with a new template and, for word/span/monolingual
    denoising, a new removed word or span (``strategy.xling.redraw``); the example itself when
    its sentence is too short to be perturbed again. ``opts``: XlingOptions or MlmOptions (mlm
    has no ``perturbation`` option: it always cuts)."""
    kind, y, x = example["granularity"], example["target_language"], example["source_language"]
    perturbation = getattr(opts, "perturbation", "cut")
    src, tgt, origin = example["source_text"], example["target_text"], example["origin"]
    if kind == "sentence":
        return builder.make("sentence", rng, x, y, src, tgt, origin=origin)
    if kind == "monolingual":
        return monolingual_example(builder, rng, y, tgt, opts.max_span, opts.mask, origin, perturbation) or example
    g = perturb(kind, tgt, rng, opts.max_span, opts.mask, perturbation)
    return builder.make(kind, rng, x, y, src, tgt, g, origin) if g else example


def _sample(items: list, limit: int | None, rng: random.Random) -> list:
    if limit is None or len(items) <= int(limit):
        return items
    keep = sorted(rng.sample(range(len(items)), int(limit)))
    return [items[i] for i in keep]


def _one_objective_each(group: list, opts: XlingOptions, rng: random.Random) -> list[str] | None:
    """``mix: one``: the objective drawn for each pair of ``group``; None for ``mix: each``."""
    if opts.mix == "each":
        return None
    return [rng.choice(opts.objectives) for _ in group]


def generate(new: list[str], langs: LanguageSet, opts: XlingOptions, seed: int,
             part: str = "pool") -> tuple[list[dict], dict]:
    """(examples, notes) for the new languages ``new``; see the module docstring. ``part``: the
    FLORES lines read (bitext.flores_part: ``all`` when the run evaluates none of them)."""
    for code in opts.known:
        langs.check(code, where="strategy.xling.known")
    pairs, notes = collect(new, opts.known, opts.bitext, opts.files, langs, part)
    builder = Builder(opts.template_data, opts.prompt_languages, langs)
    groups: dict[tuple[str, str], list[Pair]] = {}
    for p in pairs:
        groups.setdefault((p.source_language, p.target_language), []).append(p)
    examples: list[dict] = []
    too_short = 0
    mono_done: set[tuple[str, str]] = set()
    used: dict[str, int] = {}
    for (x, y), group in groups.items():
        group = _sample(group, opts.max_pairs, random.Random(f"{seed}|{x}|{y}|pairs"))
        used[y] = used.get(y, 0) + len(group)
        for direction in opts.directions:
            drawn = _one_objective_each(group, opts, random.Random(f"{seed}|{x}|{y}|{direction}|mix"))
            for objective in opts.objectives:
                rng = random.Random(f"{seed}|{x}|{y}|{direction}|{objective}")
                for i, p in enumerate(group):
                    if drawn is not None and drawn[i] != objective:
                        continue
                    src_lang, tgt_lang, src, tgt = (x, y, p.source, p.target) if direction == "to_new" else \
                        (y, x, p.target, p.source)
                    if objective == "sentence":
                        examples.append(builder.make("sentence", rng, src_lang, tgt_lang, src, tgt, origin=p.origin))
                        continue
                    if objective == "monolingual":  # the new language only, each sentence once
                        if direction != "to_new" or (y, p.target) in mono_done:
                            continue
                        mono_done.add((y, p.target))
                        ex = monolingual_example(builder, rng, y, p.target, opts.max_span, opts.mask, p.origin,
                                                 opts.perturbation)
                    else:
                        g = perturb(objective, tgt, rng, opts.max_span, opts.mask, opts.perturbation)
                        ex = builder.make(objective, rng, src_lang, tgt_lang, src, tgt, g, p.origin) if g else None
                    if ex is None:
                        too_short += 1
                    else:
                        examples.append(ex)
    counts: dict[str, int] = {}
    for e in examples:
        counts[e["granularity"]] = counts.get(e["granularity"], 0) + 1
    if used != notes["bitext_pairs"]:
        notes["bitext_pairs_available"] = notes["bitext_pairs"]
    notes.update({"bitext_pairs": used, "xling_examples": counts, "xling_too_short": too_short})
    return examples, notes


@register_source("xling")
def xling_source(languages, cfg, seed) -> list[dict]:
    """Alignment-based cross-lingual instructions for ``languages`` (options: strategy.xling)."""
    langs = LanguageSet.from_config(cfg.languages)
    examples, _ = generate(list(languages), langs, XlingOptions(**options_from_config(cfg, "xling")), seed,
                           flores_part(cfg))
    return examples
