"""A pipeline of stages: each stage = data + the model + the strategies active in it.

    from adaptlang import load_config, run
    run(load_config(["strategy=af+replay", "train.max_steps=20"]))

Everything that can be checked before training (strategies, keys, languages, data kinds)
is checked before the run directory is created, so a user mistake leaves nothing behind.
"""
from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__, instructions
from .benchmarks import check_benchmarks, run_benchmarks
from .checkpoint import Checkpointer
from .config import to_yaml
from .data import ExampleStream, line_limit, lm_examples, text_dataset, training_source
from .errors import UserError, listing, suggest
from .forgetting import forgetting
from .languages import LanguageSet
from .models import build_model, check_tokenizer_matches, count_parameters, load_pretrained, train_tokenizer
from .report import write_report
from .rundir import RunDir, write_atomic, write_json
from .strategy import Composed, StageContext, compose
from .train import train_stage

log = logging.getLogger("adaptlang")
DATA_KINDS = ("text", "instructions")
STAGE_KEYS = ("name", "data", "steps", "train")


def stage_train_config(cfg: DictConfig, stage: DictConfig) -> DictConfig:
    own = stage.get("train") or {}
    for key in own:
        if key not in cfg.train:
            raise UserError(f"experiment stage '{stage.name}': unknown train key '{key}'.{suggest(key, cfg.train)} "
                            f"Valid: {listing(cfg.train)}")
    return OmegaConf.merge(cfg.train, own)


def stage_steps(cfg: DictConfig, stage: DictConfig) -> int:
    steps = int(stage.steps)
    cap = cfg.train.get("max_steps")
    return min(steps, int(cap)) if cap else steps


def check_experiment(cfg: DictConfig, languages: LanguageSet) -> None:
    for stage in cfg.experiment.stages:
        for key in stage:
            if key not in STAGE_KEYS:
                raise UserError(f"experiment stage '{stage.get('name')}': unknown key '{key}'."
                                f"{suggest(key, STAGE_KEYS)} Valid: {listing(STAGE_KEYS)}")
        kind = stage.data.get("kind")
        if kind not in DATA_KINDS:
            raise UserError(f"stage '{stage.name}': data.kind='{kind}'.{suggest(str(kind), DATA_KINDS)} "
                            f"Valid: {listing(DATA_KINDS)}")
        languages.resolve(stage.data.get("languages", "all"))
        if kind == "instructions":
            instructions.load_builtin()
            for source in stage.data.get("sources", []):
                instructions.SOURCES.get(source)
        if int(stage.steps) < 1:
            raise UserError(f"stage '{stage.name}': steps must be >= 1")
        stage_train_config(cfg, stage)
    for code in list(cfg.data.get("train_files") or {}) + list(cfg.data.get("eval_files") or {}):
        languages.check(code, where="data.train_files/eval_files")
    check_benchmarks(list(cfg.eval.benchmarks), cfg, languages)


def text_for(codes: list[str], languages: LanguageSet, cfg: DictConfig):
    """Training text per language as memory-mapped Datasets, and the languages without any."""
    texts, skipped = {}, {}
    for code in codes:
        source, why = training_source(code, languages, cfg)
        if source is None:
            skipped[code] = why
            continue
        texts[code] = text_dataset(source, line_limit(cfg))
    if not texts:
        raise UserError(f"no training text for any of {codes}: " + "; ".join(f"{c}: {w}" for c, w in skipped.items()))
    return texts, skipped


def stage_stream(stage: DictConfig, tcfg: DictConfig, tokenizer, languages: LanguageSet, cfg: DictConfig,
                 ctx: StageContext, cache_dir: str | None = None) -> ExampleStream:
    codes = languages.resolve(stage.data.get("languages", "all"))
    if stage.data.kind == "text":
        texts, skipped = text_for(codes, languages, cfg)
        if skipped:
            ctx.notes["skipped_languages"] = skipped
            log.warning("stage %s: no training text for %s", stage.name, ", ".join(skipped))
        ctx.notes["trained_languages"] = list(texts)
        corpus = datasets.concatenate_datasets(list(texts.values()))
        blocks = lm_examples(corpus, tokenizer, int(tcfg.block_size), cache_dir)
        return ExampleStream(blocks, ctx.seed + ctx.index, name=f"stage {stage.name}")
    examples = []
    for source in stage.data.get("sources", []):
        examples += instructions.build(source, codes, cfg, ctx.seed + ctx.index)
    if not examples:
        raise UserError(f"stage '{stage.name}': its instruction sources produced no examples")
    ctx.notes["instruction_examples"] = len(examples)
    encoded = instructions.encode_all(examples, tokenizer, int(tcfg.max_length))
    return ExampleStream(encoded, ctx.seed + ctx.index, name=f"stage {stage.name}")


def initial_model(cfg: DictConfig, languages: LanguageSet):
    mcfg = cfg.model
    if mcfg.get("name_or_path"):
        return load_pretrained(str(mcfg.name_or_path), bool(mcfg.get("trust_remote_code", False)))
    if "hidden_size" not in mcfg or "tokenizer" not in mcfg:
        raise UserError("model: set model.name_or_path=PATH_OR_HUB_NAME, or choose a model config that builds "
                        "one (model=tiny)")
    codes = languages.resolve(mcfg.tokenizer.get("languages", "pretraining"))
    texts, _ = text_for(codes, languages, cfg)
    started = time.perf_counter()
    lines = (t for ds in texts.values() for batch in ds.iter(batch_size=1000) for t in batch["text"])
    tokenizer = train_tokenizer(lines, mcfg.tokenizer, int(cfg.seed))
    print(f"sentencepiece tokenizer: {len(tokenizer)} pieces in {time.perf_counter() - started:.1f}s")
    return build_model(mcfg, tokenizer, int(cfg.seed)), tokenizer


def environment() -> dict:
    import accelerate
    import datasets
    import transformers

    return {"adaptlang": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "datasets": datasets.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def _setup_logging(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run(cfg: DictConfig, composed: Composed | None = None, resume: bool = False) -> Path:
    """Run every stage of ``cfg.experiment`` and write the run directory; returns its path.

    With ``resume=True`` the existing run directory of ``cfg.name`` is continued: completed
    stages are loaded from their saved models, an interrupted stage continues from its
    latest checkpoint (see adaptlang.checkpoint), and the result is the same, bit for bit
    on CPU, as an uninterrupted run.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    composed = composed or compose(OmegaConf.to_container(cfg.strategy))
    languages = LanguageSet.from_config(cfg.languages)
    check_experiment(cfg, languages)
    name = str(cfg.get("name") or f"{'+'.join(composed.names) or 'none'}-s{cfg.seed}")
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=str(cfg.mixed_precision))
    main = accelerator.is_main_process  # several processes (accelerate launch): only rank 0 writes files
    if resume:
        rundir = RunDir.open(str(cfg.output_dir), name)
    else:
        RunDir.check_free(str(cfg.output_dir), name, bool(cfg.overwrite))
    accelerator.wait_for_everyone()  # every rank has checked before rank 0 creates the folder
    set_seed(int(cfg.seed))
    started = time.perf_counter()
    model, tokenizer = initial_model(cfg, languages)  # a bad model path fails before any output exists
    if not resume:
        if main:
            rundir = RunDir.create(str(cfg.output_dir), name, bool(cfg.overwrite))
            write_atomic(rundir.path / "config.yaml", to_yaml(cfg))
        accelerator.wait_for_everyone()
        rundir = RunDir(Path(cfg.output_dir) / name)
    elif main:
        rundir.set_status("running")
    handler = _setup_logging(rundir.path / "train.log") if main else logging.NullHandler()
    cache = tempfile.TemporaryDirectory(prefix="adaptlang-blocks-")  # memory-mapped training blocks (per rank)
    try:
        metrics: dict[str, Any] = {
            "schema": "adaptlang.metrics/1", "run": name, "status": "running",
            "strategies": composed.names, "seed": int(cfg.seed), "environment": environment(),
            "model": {"source": cfg.model.get("name_or_path") or "built from config",
                      "parameters": count_parameters(model), "vocab_size": len(tokenizer)},
            "stages": {},
        }
        done = rundir.completed_stages() if resume else {}
        metrics["stages"].update(done)
        for index, stage in enumerate(cfg.experiment.stages):
            if stage.name in done:
                model, tokenizer = load_pretrained(str(rundir.stage_dir(stage.name) / "model"))
                for strategy, state in rundir.strategy_states(stage.name).items():
                    for s, _ in composed.items:
                        if s.name == strategy:
                            s.load_state_dict(state)
                log.info("stage %s: complete, loaded from %s", stage.name, rundir.stage_dir(stage.name))
                continue
            model, tokenizer = run_stage(index, stage, cfg, composed, languages, model, tokenizer,
                                         accelerator, rundir, metrics, cache.name)
        metrics["forgetting"] = forgetting(metrics["stages"])
        metrics["status"] = "complete"
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        if main:
            write_report(rundir.path / "report.md", metrics, cfg)
            write_json(rundir.path / "metrics.json", metrics)
            rundir.set_status("complete", seconds=metrics["seconds"])
        log.info("run complete in %.1fs: %s", metrics["seconds"], rundir.path)
        return rundir.path
    except BaseException as exc:
        log.removeHandler(handler)
        handler.close()
        if main and isinstance(exc, UserError) and not resume and not rundir.completed_stages():
            shutil.rmtree(rundir.path, ignore_errors=True)  # a user mistake before any result: leave nothing
        elif main:
            rundir.set_status("failed", error=f"{type(exc).__name__}: {exc}"[:1000],
                              resume=f"adaptlang resume {rundir.path}")
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
        cache.cleanup()


def run_stage(index: int, stage: DictConfig, cfg: DictConfig, composed: Composed, languages: LanguageSet,
              model, tokenizer, accelerator, rundir: RunDir, metrics: dict, cache_dir: str | None = None):
    from accelerate.utils import set_seed

    tcfg = stage_train_config(cfg, stage)
    stage_cfg = OmegaConf.create({**OmegaConf.to_container(stage), "train": OmegaConf.to_container(tcfg)})
    ctx = StageContext(name=str(stage.name), index=index, config=cfg, stage=stage_cfg, languages=languages,
                       seed=int(cfg.seed), tokenizer=tokenizer, model=model)
    active = composed.active(ctx.name)
    set_seed(int(cfg.seed) + index)
    setup_start = time.perf_counter()
    for strategy in active:
        model, tokenizer = strategy.setup_model(model, tokenizer, ctx)
        ctx.model, ctx.tokenizer = model, tokenizer
    check_tokenizer_matches(model, tokenizer, f"stage {ctx.name}")
    parameters = count_parameters(model)  # as trained (strategies may freeze parts), before merging back
    if any("data.new_examples" in s.owns for s in active):
        stream = None  # a strategy builds this stage's new examples itself (xling, mlm)
    else:
        stream = stage_stream(stage, tcfg, tokenizer, languages, cfg, ctx, cache_dir)
    for strategy in active:
        stream = strategy.setup_data(stream, ctx)
    setup_seconds = time.perf_counter() - setup_start
    steps = stage_steps(cfg, stage)
    log.info("stage %s: strategies [%s], %d steps", ctx.name, ", ".join(s.name for s in active), steps)
    checkpointer = Checkpointer(rundir.stage_dir(ctx.name) / "checkpoints", int(cfg.train.checkpoint_every))
    model, stats = train_stage(model, tokenizer, stream, active, tcfg, steps, accelerator, ctx, checkpointer)
    for strategy in reversed(active):  # teardown in reverse set-up order (lora merges before vocab)
        strategy.on_stage_end(ctx)
    main = accelerator.is_main_process
    if main:
        rundir.save_model(ctx.name, model, tokenizer)
        write_json(rundir.stage_dir(ctx.name) / "strategies.json", {s.name: s.state_dict() for s, _ in composed.items})
    model_dir = rundir.stage_dir(ctx.name) / "model"
    eval_start = time.perf_counter()
    results = run_benchmarks(list(cfg.eval.benchmarks), model, tokenizer, languages, cfg)
    metrics["stages"][ctx.name] = {
        "strategies": [s.name for s in active],
        "train": stats,
        "setup_seconds": round(setup_seconds, 3),
        "strategy_notes": ctx.notes,
        "parameters": parameters,
        "eval": results,
        "eval_seconds": round(time.perf_counter() - eval_start, 3),
        "model_dir": str(model_dir.relative_to(rundir.path)),
    }
    if main:
        write_json(rundir.path / "metrics.json", metrics)
        checkpointer.clear()
    accelerator.wait_for_everyone()
    return model, tokenizer
