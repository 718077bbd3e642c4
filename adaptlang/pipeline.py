"""A pipeline of stages: the plan's stages, run one after another, written into a run directory.

    from adaptlang import load_config, run
    run(load_config(["strategy=af+replay", "train.max_steps=20"]))

Everything that can be checked before training is checked by the plan (adaptlang.plan)
before the run directory is created, so a user mistake leaves nothing behind.

``run_plan`` reads top to bottom: ``open_run`` (accelerator, run folder, train.log, trackers,
what a resume finds done), then per stage ``run_one_stage`` (adaptlang.stage_runner; the model
and every strategy's state saved; ``evaluate_as``: benchmarks, metrics.json) or, on a resume,
``load_completed``; then ``complete_run`` (forgetting, report.md, status) and ``close_run``.
"""
from __future__ import annotations

import logging
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ._version import __version__
from .benchmarks import run_benchmarks
from .checkpoint import Checkpointer, checkpoint_bytes, run_identity
from .composition import Composed
from .config import to_yaml
from .errors import UserError
from .forgetting import forgetting
from .models import build_model, count_parameters, load_pretrained, tokenizer_from_config
from .plan import Plan, make_plan
from .report import write_report
from .rundir import (DiskFull, RunDir, RunLock, check_space, disk_full_error, is_disk_full, write_atomic,
                     write_json)
from .seeds import derive_seed
from .stage_runner import run_stage
from .state_io import load_state, save_state
from .tempdirs import BlockCache
from .trackers import PROJECT, benchmark_figures, hyperparameters, init_kwargs, tracker_names

log = logging.getLogger("adaptlang")
# The starting model's evaluation, recorded as the first stage of metrics.json (Plan.evaluates_base):
# learning and forgetting are measured against it.
BASE = "base"


def initial_model(cfg: DictConfig, languages, tokenizer=None):
    """The run's first model and tokenizer: a checkpoint (``tokenizer``: already read from it by
    the plan), or a tokenizer trained and a model built from config."""
    mcfg = cfg.model
    if mcfg.get("name_or_path"):
        return load_pretrained(str(mcfg.name_or_path), bool(mcfg.get("trust_remote_code", False)), tokenizer)
    if "hidden_size" not in mcfg or "tokenizer" not in mcfg:
        raise UserError("model: set model.name_or_path=PATH_OR_HUB_NAME, or choose a model config that builds "
                        "one (model=tiny)")
    started = time.perf_counter()
    tokenizer = tokenizer_from_config(cfg, languages)
    print(f"sentencepiece tokenizer: {len(tokenizer)} pieces in {time.perf_counter() - started:.1f}s")
    return build_model(mcfg, tokenizer, derive_seed(int(cfg.seed), "", "model")), tokenizer


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


def resume(folder: str | Path, composed: Composed | None = None) -> Path:
    """Continue the interrupted run in ``folder`` (``runs/NAME``) from its config.yaml: the same
    result as an uninterrupted run (see ``run_plan``)."""
    from .config import load_config

    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise UserError(f"cannot resume: {folder} is not a run directory (no config.yaml)")
    cfg = load_config([f"output_dir={folder.parent}", f"name={folder.name}"], base=folder / "config.yaml")
    return run(cfg, composed, resume=True)


def run_plan(plan: Plan, resume: bool = False) -> Path:
    """Run every stage of the plan and write the run directory; returns its path.

    With ``resume=True`` the existing run directory of the plan's name is continued:
    completed stages are loaded from their saved models and strategy states, an interrupted
    stage continues from its latest checkpoint (see adaptlang.checkpoint), and the result is
    the same, bit for bit on CPU, as an uninterrupted run.
    """
    session, model, tokenizer = open_run(plan, resume)
    try:
        if plan.evaluates_base and BASE not in session.done:
            evaluate_as(session, BASE, model, tokenizer, 0, {"starting_model": True})
        step_offset = 0  # optimizer steps of the earlier stages: one step axis for the trackers
        for stage in plan.stages:
            if stage.name in session.done:
                model, tokenizer = load_completed(session, stage)
            else:
                model, tokenizer = run_one_stage(session, stage, model, tokenizer, step_offset)
            step_offset += stage.steps
        path = complete_run(session)
    except BaseException as exc:
        close_run(session, failure=exc)
        raise
    close_run(session)
    return path


@dataclass
class Session:
    """A run between ``open_run`` and ``close_run``."""
    plan: Plan
    resume: bool
    accelerator: Any
    trackers: list[str]
    rundir: RunDir
    handler: logging.Handler  # train.log (rank 0)
    cache: BlockCache  # memory-mapped training blocks (per rank)
    metrics: dict  # metrics.json as far as it goes
    done: dict  # stages completed before a resume
    started: float
    lock: RunLock | None = None  # the run folder's lock (rank 0), released by close_run

    @property
    def main(self) -> bool:  # several processes (accelerate launch): only rank 0 writes files
        return self.accelerator.is_main_process


def open_run(plan: Plan, resume: bool):
    """Accelerator, run folder (created, or reopened to resume), train.log, trackers; returns the
    ``Session`` and the run's first model and tokenizer. The run folder's lock (``RunLock``) is
    taken before anything is written and held until ``close_run``: a second run, resume or
    ``overwrite=true`` on a folder in use is refused."""
    cfg, name = plan.config, plan.name
    accelerator, trackers = make_accelerator(cfg, name)
    if resume:
        RunDir.open(str(cfg.output_dir), name)
    else:
        RunDir.check_free(str(cfg.output_dir), name, bool(cfg.overwrite))
    lock = take_lock(accelerator, str(cfg.output_dir), name)  # before anything is written
    try:
        return _open_locked(plan, resume, accelerator, trackers, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def take_lock(accelerator, output_dir: str, name: str) -> RunLock | None:
    """The run folder's lock, taken by rank 0 only; every rank learns whether it was refused, so
    that no rank waits at a barrier for a rank that has given up."""
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock.acquire(output_dir, name)
        except UserError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"cannot take the lock on run folder {Path(output_dir) / name}: {exc.strerror or exc}"
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error], from_process=0)[0]
    if error:
        if lock is not None:
            lock.release()
        raise UserError(error)
    if lock is not None and lock.note:
        print(lock.note, file=sys.stderr)
    return lock


def _open_locked(plan: Plan, resume: bool, accelerator, trackers, lock):
    from accelerate.utils import set_seed

    cfg, name = plan.config, plan.name
    main = accelerator.is_main_process
    rundir = RunDir(Path(cfg.output_dir) / name)
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
    if lock is not None and lock.note:
        log.warning(lock.note)
    if trackers:
        from omegaconf import OmegaConf

        accelerator.init_trackers(PROJECT, config=hyperparameters(OmegaConf.to_container(cfg, resolve=True)),
                                  init_kwargs=init_kwargs(trackers, name))
    cache = BlockCache()
    done = rundir.completed_stages() if resume else {}
    metrics: dict[str, Any] = {
        "schema": "adaptlang.metrics/1", "run": name, "status": "running",
        "strategies": plan.composed.names, "seed": plan.seed, "environment": environment(),
        "model": {"source": cfg.model.get("name_or_path") or "built from config",
                  "parameters": count_parameters(model), "vocab_size": len(tokenizer)},
        "stages": dict(done),
    }
    session = Session(plan, resume, accelerator, trackers, rundir, handler, cache, metrics, done, started, lock)
    return session, model, tokenizer


def make_accelerator(cfg: DictConfig, name: str):
    """The run's Accelerator, with the experiment trackers of ``train.report_to`` (checked by the
    plan); returns (accelerator, tracker names)."""
    from accelerate import Accelerator

    from .sharding import fsdp_accelerator, fsdp_plugin

    _allow_new_precision(str(cfg.mixed_precision))
    trackers = tracker_names(cfg.train.get("report_to"))
    plugin = fsdp_plugin() if cfg.train.get("fsdp", False) else None
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=str(cfg.mixed_precision),
                              log_with=trackers or None, fsdp_plugin=plugin,
                              project_dir=str(Path(cfg.output_dir) / name / "trackers") if trackers else None)
    if plugin is not None:
        fsdp_accelerator(accelerator, plugin)
    return accelerator, trackers


def load_completed(session: Session, stage) -> tuple[Any, Any]:
    """A stage completed before a resume: its saved model, and every strategy's saved state."""
    from .checkpoint import damaged

    composed, folder = session.plan.composed, session.rundir.stage_dir(stage.name)
    current = folder / "model"
    try:
        model, tokenizer = load_pretrained(str(current))
        current = folder / "strategies.json"
        for strategy_name, state in load_state(folder, "strategies").items():
            if composed.get(strategy_name) is not None:
                composed.get(strategy_name).load_state_dict(state)
    except UserError:
        raise
    except Exception as exc:  # a damaged file of a completed stage: one line naming it
        raise damaged(current, exc) from None
    log.info("stage %s: complete, loaded from %s", stage.name, folder)
    return model, tokenizer


def run_one_stage(session: Session, stage, model, tokenizer, step_offset: int) -> tuple[Any, Any]:
    """Train one stage (adaptlang.stage_runner), save its model and strategy states, evaluate it
    and record its metrics. ``step_offset``: optimizer steps of the earlier stages."""
    plan, composed, cfg = session.plan, session.plan.composed, session.plan.config
    folder = session.rundir.stage_dir(stage.name)
    # a stage that a resume finds interrupted continues from its checkpoint; any other starts anew
    interrupted = session.resume and (folder / "checkpoints").is_dir()
    checkpointer = Checkpointer(folder / "checkpoints", int(cfg.train.checkpoint_every), run_identity(cfg),
                                fresh=not interrupted, owner=session.main)
    if session.main:  # its model, and a checkpoint beside the one kept: found now, not when written
        weights = checkpoint_bytes(model, moments=False)
        check_space(folder, weights + (checkpoint_bytes(model) if checkpointer.every > 0 else 0),
                    f"stage '{stage.name}' (its model and a checkpoint)")
    result = run_stage(stage, composed.active(stage.name), model, tokenizer, seed=plan.seed,
                       accelerator=session.accelerator, languages=plan.languages, config=cfg,
                       cache_dir=session.cache.name, checkpointer=checkpointer, step_offset=step_offset)
    model, tokenizer = result.model, result.tokenizer
    if session.main:
        session.rundir.save_model(stage.name, model, tokenizer)
        try:
            save_state(folder, "strategies", {s.name: s.state_dict() for s, _ in composed.items})
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise disk_full_error(f"the {stage.name} strategies' state", folder / "strategies.json") from None
            raise
    trained = {"strategies": result.strategies, "train": result.train, "setup_seconds": result.setup_seconds,
               "strategy_notes": result.notes, "parameters": result.parameters}
    evaluate_as(session, stage.name, model, tokenizer, step_offset + stage.steps, trained,
                model_dir=folder / "model", benchmarks=plan.benchmarks if plan.evaluates(stage.name) else [])
    if session.main:
        checkpointer.clear()
    session.accelerator.wait_for_everyone()
    return model, tokenizer


def evaluate_as(session: Session, name: str, model, tokenizer, step: int, entry: dict | None = None,
                model_dir: Path | None = None, benchmarks: list[str] | None = None) -> dict:
    """Run ``benchmarks`` (default: the plan's) on ``model`` as stage ``name`` and record them:
    metrics.json's ``stages.<name>`` (``entry``, then vocab_size, eval, eval_seconds and
    ``model_dir``) is written, and the figures go to the trackers at ``step``. Returns the
    stage's entry; a stage that eval.stages leaves out has ``eval: {}``."""
    plan = session.plan
    started = time.perf_counter()
    names = plan.benchmarks if benchmarks is None else benchmarks
    results = run_benchmarks(names, model, tokenizer, plan.languages, plan.config) if names else {}
    if session.trackers and results:
        session.accelerator.log(benchmark_figures(results), step=step)
    record = {**(entry or {}), "vocab_size": len(tokenizer), "eval": results,
              "eval_seconds": round(time.perf_counter() - started, 3)}
    if model_dir is not None:
        record["model_dir"] = str(Path(model_dir).relative_to(session.rundir.path))
    session.metrics["stages"][name] = record
    if session.main:
        write_json(session.rundir.path / "metrics.json", session.metrics)
    return record


def complete_run(session: Session) -> Path:
    """Forgetting, report.md, the final metrics.json and status.json."""
    metrics, rundir = session.metrics, session.rundir
    metrics["forgetting"] = forgetting(metrics["stages"])
    metrics["status"] = "complete"
    metrics["seconds"] = round(time.perf_counter() - session.started, 2)
    if session.main:
        write_report(rundir.path / "report.md", metrics, session.plan.config)
        write_json(rundir.path / "metrics.json", metrics)
        rundir.set_status("complete", seconds=metrics["seconds"])
    log.info("run complete in %.1fs: %s", metrics["seconds"], rundir.path)
    return rundir.path


def close_run(session: Session, failure: BaseException | None = None) -> None:
    """Close train.log; after a ``failure``, remove the run folder or mark it failed
    (``record_failure``); end the trackers; remove the block cache."""
    log.removeHandler(session.handler)
    session.handler.close()
    try:
        if failure is not None:
            record_failure(session, failure)
    finally:
        try:
            if session.trackers:
                session.accelerator.end_training()
            session.cache.cleanup()
        finally:
            if session.lock is not None:
                session.lock.release()


def record_failure(session: Session, exc: BaseException) -> None:
    """A user mistake before any result leaves nothing; anything else marks the run failed
    (resumable)."""
    if not session.main:
        return
    rundir = session.rundir
    if (isinstance(exc, UserError) and not isinstance(exc, DiskFull) and not session.resume
            and not rundir.completed_stages()):
        shutil.rmtree(rundir.path, ignore_errors=True)
        return
    try:
        rundir.mark_failed(f"{type(exc).__name__}: {exc}")
    except OSError as err:  # a full disk may not take even status.json
        log.error("could not mark %s failed: %s", rundir.path, err)
