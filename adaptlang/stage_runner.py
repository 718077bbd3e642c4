"""One stage, start to end: the only place a stage's lifecycle is written.

    result = run_stage(stage, strategies, model, tokenizer, seed=0, ...)   # -> StageResult

1. seed the stage (adaptlang.seeds: (seed, stage, "init")) and record what the model looks
   like (parameters' ``requires_grad``, module classes, hooks, shapes);
2. ``setup_model`` of every active strategy, in set-up order;
3. the stage's examples: given by the caller, or built from the plan's data (text blocks or
   instruction sources) unless a strategy builds them itself (``builds_examples``); then
   ``setup_data`` of every active strategy (replay wraps the stream, ...);
4. the training loop (adaptlang.train.train_stage), resumable from ``checkpointer``;
5. ``on_stage_end`` in reverse set-up order (adapters merge before vocab merges its rows);
6. the ownership rule: whatever the strategies changed on the model for this stage is
   undone -- ``requires_grad`` is restored, and module classes, hooks and parameter shapes
   must be as before, except the vocabulary sizes a strategy declares it changes
   (``changes = {"vocabulary"}``). A strategy that leaves anything else behind is a bug,
   reported naming the strategies of the stage.

The pipeline (adaptlang.pipeline), the tests and bench/ all run stages through here.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import datasets
from omegaconf import OmegaConf

from . import instructions
from .data import ExampleStream, lm_examples
from .errors import UserError
from .mixture import MixedStream, target_shares
from .models import check_tokenizer_matches, count_parameters
from .plan import PlannedStage
from .seeds import derive_seed
from .sources import line_limit, source_fingerprint, text_for, training_source
from .strategy import StageContext, Strategy
from .text_budget import refuse_short_stream
from .train import train_stage
from .yamlfiles import CONFIG_ROOT, read_yaml

log = logging.getLogger("adaptlang")


@dataclass
class StageResult:
    model: Any
    tokenizer: Any
    train: dict  # the loop's figures (steps, tokens, seconds, losses, ...)
    notes: dict  # the strategies' figures (metrics.json: strategy_notes)
    parameters: dict  # total / trainable, as trained (before adapters were merged back)
    setup_seconds: float
    strategies: list[str] = field(default_factory=list)


def adhoc_stage(name: str = "stage", steps: int = 5, train: dict | None = None, index: int = 0,
                languages=(), strategies=()) -> PlannedStage:
    """A stage outside any experiment (tests, benchmarks): base.yaml's train options + ``train``."""
    base = read_yaml(CONFIG_ROOT / "base.yaml")["train"]
    unknown = set(train or {}) - set(base)
    if unknown:
        raise UserError(f"unknown train keys {sorted(unknown)}")
    return PlannedStage(name, index, "text", tuple(languages), (), int(steps), {**base, **(train or {})},
                        tuple(strategies), "given by the caller")


def stage_stream(stage: PlannedStage, tokenizer, ctx: StageContext, cache_dir: str | None = None) -> ExampleStream:
    """The stage's own examples from the plan: text cut into LM blocks, or instruction sources."""
    cfg, languages = ctx.config, ctx.languages
    if stage.kind == "text":
        texts, skipped = text_for(list(stage.languages), languages, cfg)
        if skipped:
            ctx.notes["skipped_languages"] = skipped
            log.warning("stage %s: no training text for %s", stage.name, ", ".join(skipped))
        ctx.notes["trained_languages"] = list(texts)
        if stage.mixture is not None and stage.mixture.active:
            return mixed_stream(stage, texts, tokenizer, ctx, cache_dir)
        blocks = text_blocks(texts, tokenizer, ctx, cache_dir)
        if stage.mixture is not None and not stage.mixture.repeat:
            refuse_short_stream(stage, list(texts), len(blocks))
        return ExampleStream(blocks, ctx.seed_for("data"), name=f"stage {stage.name}", languages=list(texts))
    examples = []
    for source in stage.sources:
        examples += instructions.build(source, list(stage.languages), cfg, ctx.seed_for(f"instructions/{source}"))
    if not examples:
        raise UserError(f"stage '{stage.name}': its instruction sources produced no examples")
    ctx.notes["instruction_examples"] = len(examples)
    instructions.check_chat_template(cfg, tokenizer, "this run's model")
    encoded = instructions.encode_all(examples, tokenizer, int(ctx.train.max_length), instructions.chat_setting(cfg))
    ctx.notes["chat_template"] = instructions.uses_chat_template(tokenizer, instructions.chat_setting(cfg))
    return ExampleStream(encoded, ctx.seed_for("data"), name=f"stage {stage.name}")


def text_blocks(texts: dict, tokenizer, ctx: StageContext, cache_dir: str | None):
    """LM blocks of ``texts`` (language code -> its training text; joined in that order), each
    with its tokens per language, tokenized by ``data.num_proc`` processes; kept in
    ``data.cache_dir`` under a key of the text's sources, the tokenizer and the block size when
    that is set (reused by later runs), else in the run's own temporary cache."""
    data = ctx.config.data
    keep = data.get("cache_dir")
    key = None
    if keep:
        limit = line_limit(ctx.config)
        key = "+".join(source_fingerprint(training_source(c, ctx.languages, ctx.config)[0], limit) for c in texts)
    text = datasets.concatenate_datasets(list(texts.values()))
    return lm_examples(text, tokenizer, int(ctx.train.block_size), str(keep) if keep else cache_dir, key,
                       int(data.get("num_proc") or 1), rows_by_language=[len(t) for t in texts.values()])


def mixed_stream(stage: PlannedStage, texts: dict, tokenizer, ctx: StageContext, cache_dir: str | None) -> MixedStream:
    """Per-language LM blocks (and the replayed languages' text) in the stage's target shares;
    a language that needs more blocks than it has is repeated, or refused (``repeat: false``)."""
    block_size = int(ctx.train.block_size)
    past = {}
    if stage.replay_languages:
        past, _ = text_for(list(stage.replay_languages), ctx.languages, ctx.config, require=False)
    streams = {}
    for code, text in {**texts, **past}.items():
        blocks = text_blocks({code: text}, tokenizer, ctx, cache_dir)
        streams[code] = ExampleStream(blocks, derive_seed(ctx.seed_for("data"), "", f"mixture/{code}"),
                                      name=f"stage {stage.name}, language {code}", languages=[code])
    available = {code: len(s) * block_size for code, s in streams.items()}
    shares = target_shares(available, stage.mixture, list(texts), list(past))
    draws = stage.block_draws
    for code, share in shares.items():
        needed = math.ceil(share * draws)
        log.info("stage %s: %s target share %.4f: %d of %d tokens available (%.2f epochs)", stage.name, code, share,
                 needed * block_size, available[code], needed / len(streams[code]))
        if needed > len(streams[code]) and not stage.mixture.repeat:
            raise UserError(f"stage '{stage.name}': language {code} needs {needed * block_size:,} tokens "
                            f"({share:.1%} of {draws * block_size:,}) but its text has {available[code]:,}, and "
                            "data.mixture.repeat=false; give fewer steps/tokens, more text, or repeat=true")
    if past:
        ctx.notes["replayed_languages"] = list(past)
    return MixedStream(streams, shares, name=f"stage {stage.name}")


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def model_shape(model) -> dict:
    """What the ownership rule compares before and after a stage."""
    return {"requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "modules": {n: type(m).__name__ for n, m in model.named_modules()},
            "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()},
            "hooks": _hooks(model)}


def restore_ownership(model, before: dict, active: list[Strategy], stage: str) -> None:
    """Undo ``requires_grad`` changes; refuse module, hook or shape changes nobody declared."""
    names = ", ".join(s.name for s in active) or "none"
    after = model_shape(model)
    if after["modules"] != before["modules"]:
        left = sorted(set(after["modules"].items()) ^ set(before["modules"].items()))[:4]
        raise RuntimeError(f"stage {stage}: the model's modules changed and were not restored at the end of the "
                           f"stage (strategies: {names}); e.g. {left}")
    if after["hooks"] != before["hooks"]:
        raise RuntimeError(f"stage {stage}: {after['hooks'] - before['hooks']} module hooks left behind "
                           f"(strategies: {names})")
    grows = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        grows.add(id(head.weight))
    vocab_changed = any("vocabulary" in s.changes for s in active)
    for name, p in model.named_parameters():
        if after["shapes"][name] != before["shapes"].get(name) and not (vocab_changed and id(p) in grows):
            raise RuntimeError(f"stage {stage}: parameter {name} changed shape {before['shapes'].get(name)} -> "
                               f"{after['shapes'][name]} (strategies: {names}; only a strategy that declares "
                               f"changes={{'vocabulary'}} may resize the embeddings)")
        p.requires_grad_(before["requires_grad"].get(name, True))


def run_stage(stage: PlannedStage, strategies: list[Strategy], model, tokenizer, *, seed: int, accelerator=None,
              languages=None, config=None, stream=None, cache_dir: str | None = None,
              checkpointer=None, step_offset: int = 0) -> StageResult:
    """Set up, train and close one stage with its active ``strategies`` (in set-up order)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = accelerator or Accelerator(cpu=True)
    ctx = StageContext(name=stage.name, index=stage.index, seed=int(seed), train=OmegaConf.create(stage.train),
                       languages=languages, stage_languages=list(stage.languages), config=config,
                       tokenizer=tokenizer, model=model)
    set_seed(derive_seed(seed, stage.name, "init"))
    before = model_shape(model)
    started = time.perf_counter()
    for strategy in strategies:
        model, tokenizer = strategy.setup_model(model, tokenizer, ctx)
        ctx.model, ctx.tokenizer = model, tokenizer
    check_tokenizer_matches(model, tokenizer, f"stage {stage.name}")
    parameters = count_parameters(model)  # as trained (strategies may freeze parts), before merging back
    if stream is None and not any(s.builds_examples for s in strategies):
        stream = stage_stream(stage, tokenizer, ctx, cache_dir)
    own_stream = stream
    for strategy in strategies:
        stream = strategy.setup_data(stream, ctx)
    if stream is None:
        raise UserError(f"stage '{stage.name}': no examples (no data and no strategy that builds them)")
    setup_seconds = time.perf_counter() - started
    log.info("stage %s: strategies [%s], %d steps", stage.name, ", ".join(s.name for s in strategies), stage.steps)
    model, stats = train_stage(model, tokenizer, stream, strategies, ctx.train, stage.steps, accelerator, ctx,
                               checkpointer, step_offset)
    if isinstance(own_stream, (ExampleStream, MixedStream)):  # text blocks: the tokens drawn per language
        stats.update(own_stream.realized())
    ctx.model = model
    for strategy in reversed(strategies):
        strategy.on_stage_end(ctx)
    model, tokenizer = ctx.model, ctx.tokenizer
    restore_ownership(model, before, strategies, stage.name)
    return StageResult(model, tokenizer, stats, ctx.notes, parameters, round(setup_seconds, 3),
                       [s.name for s in strategies])
