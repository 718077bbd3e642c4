"""A pipeline of stages: the plan's stages, run one after another, written into a run directory.

    from adaptlang import load_config, run
    run(load_config(["strategy=af+replay", "train.max_steps=20"]))

Everything that can be checked before training is checked by the plan (adaptlang.plan)
before the run directory is created, so a user mistake leaves nothing behind. Each stage
runs through adaptlang.stage_runner; after it, the model and every strategy's state are
saved and the benchmarks run.
"""
from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ._version import __version__
from .benchmarks import run_benchmarks
from .checkpoint import Checkpointer
from .composition import Composed
from .config import to_yaml
from .errors import UserError
from .forgetting import forgetting
from .models import build_model, count_parameters, load_pretrained, train_tokenizer
from .plan import Plan, make_plan
from .report import write_report
from .rundir import RunDir, write_atomic, write_json
from .seeds import derive_seed
from .sources import text_for
from .stage_runner import run_stage
from .state_io import load_state, save_state
from .trackers import PROJECT, benchmark_figures, hyperparameters, init_kwargs, tracker_names

log = logging.getLogger("adaptlang")


def initial_model(cfg: DictConfig, languages, tokenizer=None):
    """The run's first model and tokenizer: a checkpoint (``tokenizer``: already read from it by
    the plan), or a tokenizer trained and a model built from config."""
    mcfg = cfg.model
    if mcfg.get("name_or_path"):
        return load_pretrained(str(mcfg.name_or_path), bool(mcfg.get("trust_remote_code", False)), tokenizer)
    if "hidden_size" not in mcfg or "tokenizer" not in mcfg:
        raise UserError("model: set model.name_or_path=PATH_OR_HUB_NAME, or choose a model config that builds "
                        "one (model=tiny)")
    codes = languages.resolve(mcfg.tokenizer.get("languages", "pretraining"))
    texts, _ = text_for(codes, languages, cfg)
    started = time.perf_counter()
    lines = (t for ds in texts.values() for batch in ds.iter(batch_size=1000) for t in batch["text"])
    seed = derive_seed(int(cfg.seed), "", "model")
    tokenizer = train_tokenizer(lines, mcfg.tokenizer, seed)
    print(f"sentencepiece tokenizer: {len(tokenizer)} pieces in {time.perf_counter() - started:.1f}s")
    return build_model(mcfg, tokenizer, seed), tokenizer


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


def _allow_new_precision(mixed_precision: str) -> None:
    """accelerate keeps one AcceleratorState per process; a later run in the same Python process
    (a grid, a notebook) with another mixed precision resets its precision part, keeping the
    process group."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def run(cfg: DictConfig, composed: Composed | None = None, resume: bool = False) -> Path:
    """Plan ``cfg`` (strategies built from it, or ``composed``), then run the plan."""
    return run_plan(make_plan(cfg, composed), resume=resume)


def run_plan(plan: Plan, resume: bool = False) -> Path:
    """Run every stage of the plan and write the run directory; returns its path.

    With ``resume=True`` the existing run directory of the plan's name is continued:
    completed stages are loaded from their saved models and strategy states, an interrupted
    stage continues from its latest checkpoint (see adaptlang.checkpoint), and the result is
    the same, bit for bit on CPU, as an uninterrupted run.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg, composed, name = plan.config, plan.composed, plan.name
    _allow_new_precision(str(cfg.mixed_precision))
    trackers = tracker_names(cfg.train.get("report_to"))  # checked by the plan
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=str(cfg.mixed_precision),
                              log_with=trackers or None,
                              project_dir=str(Path(cfg.output_dir) / name / "trackers") if trackers else None)
    main = accelerator.is_main_process  # several processes (accelerate launch): only rank 0 writes files
    if resume:
        rundir = RunDir.open(str(cfg.output_dir), name)
    else:
        RunDir.check_free(str(cfg.output_dir), name, bool(cfg.overwrite))
    accelerator.wait_for_everyone()  # every rank has checked before rank 0 creates the folder
    set_seed(derive_seed(plan.seed, "", "model"))
    started = time.perf_counter()
    # a bad model path fails before any output exists; the plan has read a local checkpoint's tokenizer
    model, tokenizer = initial_model(cfg, plan.languages, plan.base_tokenizer)
    if not resume:
        if main:
            rundir = RunDir.create(str(cfg.output_dir), name, bool(cfg.overwrite))
            write_atomic(rundir.path / "config.yaml", to_yaml(cfg))
        accelerator.wait_for_everyone()
        rundir = RunDir(Path(cfg.output_dir) / name)
    elif main:
        rundir.set_status("running")
    handler = _setup_logging(rundir.path / "train.log") if main else logging.NullHandler()
    if trackers:
        from omegaconf import OmegaConf

        accelerator.init_trackers(PROJECT, config=hyperparameters(OmegaConf.to_container(cfg, resolve=True)),
                                  init_kwargs=init_kwargs(trackers, name))
    cache = tempfile.TemporaryDirectory(prefix="adaptlang-blocks-")  # memory-mapped training blocks (per rank)
    try:
        metrics: dict[str, Any] = {
            "schema": "adaptlang.metrics/1", "run": name, "status": "running",
            "strategies": composed.names, "seed": plan.seed, "environment": environment(),
            "model": {"source": cfg.model.get("name_or_path") or "built from config",
                      "parameters": count_parameters(model), "vocab_size": len(tokenizer)},
            "stages": {},
        }
        done = rundir.completed_stages() if resume else {}
        metrics["stages"].update(done)
        step_offset = 0  # optimizer steps of the earlier stages: one step axis for the trackers
        for stage in plan.stages:
            folder = rundir.stage_dir(stage.name)
            step_offset += stage.steps
            if stage.name in done:
                model, tokenizer = load_pretrained(str(folder / "model"))
                for strategy_name, state in load_state(folder, "strategies").items():
                    if composed.get(strategy_name) is not None:
                        composed.get(strategy_name).load_state_dict(state)
                log.info("stage %s: complete, loaded from %s", stage.name, folder)
                continue
            checkpointer = Checkpointer(folder / "checkpoints", int(cfg.train.checkpoint_every))
            result = run_stage(stage, composed.active(stage.name), model, tokenizer, seed=plan.seed,
                               accelerator=accelerator, languages=plan.languages, config=cfg,
                               cache_dir=cache.name, checkpointer=checkpointer,
                               step_offset=step_offset - stage.steps)
            model, tokenizer = result.model, result.tokenizer
            if main:
                rundir.save_model(stage.name, model, tokenizer)
                save_state(folder, "strategies", {s.name: s.state_dict() for s, _ in composed.items})
            eval_start = time.perf_counter()
            results = run_benchmarks(plan.benchmarks, model, tokenizer, plan.languages, cfg)
            if trackers:
                accelerator.log(benchmark_figures(results), step=step_offset)
            metrics["stages"][stage.name] = {
                "strategies": result.strategies,
                "train": result.train,
                "setup_seconds": result.setup_seconds,
                "strategy_notes": result.notes,
                "parameters": result.parameters,
                "vocab_size": len(tokenizer),
                "eval": results,
                "eval_seconds": round(time.perf_counter() - eval_start, 3),
                "model_dir": str((folder / "model").relative_to(rundir.path)),
            }
            if main:
                write_json(rundir.path / "metrics.json", metrics)
                checkpointer.clear()
            accelerator.wait_for_everyone()
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
            rundir.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if trackers:
            accelerator.end_training()
        log.removeHandler(handler)
        handler.close()
        cache.cleanup()
