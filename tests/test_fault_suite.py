"""Seeded fault injection: runs killed with SIGKILL at many points, across strategies, each
resumed to the bit-identical result of an uninterrupted run.

For each strategy combination a reference run goes uninterrupted; then one run is killed at
its first chosen point, resumed and killed at the next, and so on, and finally resumed to the
end: its stage models (safetensors bytes) and metrics must equal the reference's. Every run
is a ``fork`` of the test process (the libraries are imported once; the child dies by a real
SIGKILL, so the folder holds exactly what a killed run leaves), with one thread, as is its
reference, which runs in the test process first (so that the children find every library
imported: avalanche's import alone would cost each child seconds).

Kill points (per stage, in the order a run meets them): after optimizer step 1..4 (before
any checkpoint of that step), while writing the step-2 checkpoint (its weights written, its
state.json not), while saving the stage's model (written, not yet renamed), at the stage's
evaluation, and after the stage is recorded, before its checkpoints are removed. Which points
are taken is drawn with ``random.Random(FAULT_SEED)`` (one of each phase per strategy, the
rest at random); ``ADAPTLANG_FAULT_SEED=N`` draws others.
"""
from __future__ import annotations

import json
import os
import random
import signal
import traceback
from pathlib import Path

import pytest

from conftest import QUICK

FAULT_SEED = int(os.environ.get("ADAPTLANG_FAULT_SEED", "32"))
STRATEGIES = {"af+replay": ["strategy.af.every=2", "strategy.replay.size=8"],
              "ewc+replay": ["strategy.replay.size=8"], "si": []}
KILLS_PER_STRATEGY = 7
STAGES = ("pretrain", "adapt", "instruct")
PHASES = ("step", "checkpoint", "save", "eval", "recorded")
STEPS = 4
SETTINGS = [o for o in QUICK if not o.startswith("train.max_steps")] + [
    f"train.max_steps={STEPS}", "train.checkpoint_every=2", "eval.benchmarks=[perplexity]",
    "model.tokenizer.vocab_size=600"]
LANGUAGES = "classes:\n  pretraining: [en, fr]\n  adapting: [de]\n"  # few, for time: every restart reads them


def kill_points() -> list[tuple[str, str, int]]:
    """Every (stage, phase, step) in the order a run meets them."""
    points = []
    for stage in STAGES:
        for step in range(1, STEPS + 1):
            points.append((stage, "step", step))
            if step == 2:
                points.append((stage, "checkpoint", 2))
        points += [(stage, "save", 0), (stage, "eval", 0), (stage, "recorded", 0)]
    return points


def drawn(strategy_index: int) -> list[tuple[str, str, int]]:
    """One point of each phase, the rest of the strategy's points at random (seeded)."""
    points = kill_points()
    rng = random.Random(FAULT_SEED * 100 + strategy_index)
    chosen = [rng.choice([p for p in points if p[1] == phase]) for phase in PHASES]
    chosen += rng.sample([p for p in points if p not in chosen], KILLS_PER_STRATEGY - len(chosen))
    return sorted(chosen, key=points.index)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(stage: str, phase: str, step: int) -> None:
    """Make this (forked) process SIGKILL itself at the kill point."""
    from adaptlang import checkpoint, pipeline, rundir
    from adaptlang.checkpoint import Checkpointer

    if phase == "step":
        due = Checkpointer.due

        def dying_due(self, s, total):
            if stage in self.folder.parts and s == step:
                _die()
            return due(self, s, total)
        Checkpointer.due = dying_due
    elif phase == "checkpoint":
        write_json = checkpoint.write_json

        def dying_write(path, obj):
            if path.name == "state.json" and stage in path.parts and obj["step"] == step:
                _die()
            return write_json(path, obj)
        checkpoint.write_json = dying_write
    elif phase == "save":
        replace = rundir.os.replace

        def dying_replace(src, dst):
            if Path(dst).name == "model" and Path(dst).parent.name == stage:
                _die()
            return replace(src, dst)
        rundir.os.replace = dying_replace
    elif phase == "eval":
        evaluate_as = pipeline.evaluate_as

        def dying_eval(session, name, *a, **k):
            if name == stage:
                _die()
            return evaluate_as(session, name, *a, **k)
        pipeline.evaluate_as = dying_eval
    elif phase == "recorded":
        clear = Checkpointer.clear

        def dying_clear(self):
            if stage in self.folder.parts:
                _die()
            return clear(self)
        Checkpointer.clear = dying_clear


def in_fork(work, kill=None) -> int:
    """Run ``work()`` in a forked child (one thread, armed to die at ``kill``); returns the
    signal that ended it, or 0 for a clean exit (-1: it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            import torch

            torch.set_num_threads(1)
            if kill:
                arm(*kill)
            work()
            code = 0
        except BaseException:  # noqa: BLE001 -- the child reports and exits, whatever happened
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    return 0 if os.WEXITSTATUS(status) == 0 else -1


@pytest.mark.slow
@pytest.mark.parametrize("index, strategy", list(enumerate(STRATEGIES)), ids=list(STRATEGIES))
def test_killed_at_drawn_points_and_resumed_is_bit_identical(tmp_path, index, strategy):
    import adaptlang
    from test_resume import comparable

    (tmp_path / "languages.yaml").write_text(LANGUAGES)
    settings = SETTINGS + [f"languages={tmp_path / 'languages.yaml'}", f"strategy={strategy}", *STRATEGIES[strategy]]
    cfg = lambda out: adaptlang.load_config(settings + [f"output_dir={out}", "name=run"])  # noqa: E731
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the children; the reference runs here, so the children find everything imported
    try:
        adaptlang.run(cfg(tmp_path / "ref"))
    finally:
        torch.set_num_threads(threads)
    reference, run = tmp_path / "ref" / "run", tmp_path / "faulty" / "run"
    points = drawn(index)
    for i, point in enumerate(points):
        work = (lambda: adaptlang.run(cfg(tmp_path / "faulty"))) if i == 0 else (lambda: adaptlang.resume(run))
        assert in_fork(work, point) == signal.SIGKILL, f"{strategy}: the run did not die at {point}"
        assert json.loads((run / "status.json").read_text())["status"] == "running", point
    assert in_fork(lambda: adaptlang.resume(run)) == 0, f"{strategy}: the final resume failed"

    for stage in STAGES:
        mine = (run / "stages" / stage / "model" / "model.safetensors").read_bytes()
        theirs = (reference / "stages" / stage / "model" / "model.safetensors").read_bytes()
        assert mine == theirs, f"{strategy}: stage {stage} weights differ after kills at {points}"
    ours, ref = (json.loads((p / "metrics.json").read_text()) for p in (run, reference))
    assert comparable(ours) == comparable(ref), f"{strategy}: metrics differ after kills at {points}"
    assert ours["status"] == "complete"


def test_the_drawn_points_cover_every_phase_and_are_enough():
    chosen = [p for i in range(len(STRATEGIES)) for p in drawn(i)]
    assert len(chosen) >= 20
    assert {phase for _, phase, _ in chosen} == set(PHASES)
    assert {stage for stage, _, _ in chosen} == set(STAGES)
