"""A run killed at any moment (SIGKILL mid-step or mid-checkpoint-write) resumes to the same
weights, optimizer state and metrics as the uninterrupted run, bit for bit on CPU."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

import adaptlang
from adaptlang.composition import build_strategy
from adaptlang import UserError
from adaptlang.checkpoint import Checkpointer
from adaptlang.cli import main as cli_main

from conftest import QUICK

SETTINGS = [o for o in QUICK if not o.startswith("train.max_steps")] + [
    "train.max_steps=6", "train.checkpoint_every=2", "strategy=af+replay", "strategy.af.every=2",
    "strategy.replay.size=8"]

CHILD = textwrap.dedent('''
    import os, signal, sys
    from omegaconf import OmegaConf
    import adaptlang
    from adaptlang import checkpoint
    from adaptlang.composition import compose
    from adaptlang.strategy import Strategy

    out, name, stage, step, mode = sys.argv[1:6]
    settings = sys.argv[6:]

    class KillAt(Strategy):
        name = "kill"
        def on_step_end(self, state):
            if state.step == int(step) and mode == "step":
                os.kill(os.getpid(), signal.SIGKILL)

    if mode == "checkpoint":  # die after the weights, before the checkpoint is marked complete
        real = checkpoint.write_json
        def dying(path, obj):
            if path.name == "state.json" and obj["step"] == int(step) and stage in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, obj)
        checkpoint.write_json = dying

    cfg = adaptlang.load_config(settings + [f"output_dir={out}", f"name={name}"])
    composed = compose(OmegaConf.to_container(cfg.strategy))
    composed.items.append((KillAt(), (stage,)))
    adaptlang.run(cfg, composed)
''')


def comparable(metrics):
    """Everything but wall-clock figures and environment."""
    out = {}
    for name, st in metrics["stages"].items():
        train = {k: v for k, v in st["train"].items() if k not in ("seconds", "tokens_per_second", "data_seconds", "strategy_seconds")}
        notes = {k: v for k, v in st["strategy_notes"].items()}
        out[name] = {"train": train, "eval": st["eval"], "notes": notes}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return adaptlang.run(adaptlang.load_config(SETTINGS + [f"output_dir={out}", "name=ref"]))


@pytest.mark.parametrize("stage, step, mode", [
    ("pretrain", 3, "step"),        # SIGKILL mid-stage, after the step-2 checkpoint
    ("instruct", 5, "step"),        # in a later stage, with replay's stream state
    ("adapt", 4, "checkpoint"),     # SIGKILL while writing the step-4 checkpoint
])
@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(reference, tmp_path, stage, step, mode):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "run", stage, str(step), mode, *SETTINGS],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # not complete
    if mode == "checkpoint":
        folder = run / "stages" / stage / "checkpoints"
        assert not (folder / f"step-{step:06d}" / "COMPLETE").exists()
        assert (folder / "latest").read_text().strip() == f"step-{step - 2:06d}"

    assert cli_main(["resume", str(run)]) == 0

    for name in ("pretrain", "adapt", "instruct"):
        mine = (run / "stages" / name / "model" / "model.safetensors").read_bytes()
        theirs = (reference / "stages" / name / "model" / "model.safetensors").read_bytes()
        assert mine == theirs, f"stage {name} weights differ after resume"
    ours = json.loads((run / "metrics.json").read_text())
    ref = json.loads((reference / "metrics.json").read_text())
    assert comparable(ours) == comparable(ref)
    assert ours["status"] == "complete"
    assert not (run / "stages" / stage / "checkpoints").exists()


def test_optimizer_state_after_resume_matches(tokenizer):
    from accelerate import Accelerator

    from adaptlang.data import ExampleStream
    from adaptlang.strategy import StageContext, Strategy
    from adaptlang.train import train_stage

    from conftest import make_model

    examples = [{"input_ids": list(range(3 + i, 19 + i)), "labels": list(range(3 + i, 19 + i))} for i in range(9)]
    tcfg = OmegaConf.create({"batch_size": 2, "grad_accum": 1, "lr": 1e-3, "weight_decay": 0.01,
                             "betas": [0.9, 0.95], "eps": 1e-8, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
                             "log_every": 100})

    def ctx():
        return StageContext(name="pretrain", index=0, seed=1, train=None)

    class Crash(Strategy):
        name = "crash"

        def on_step_end(self, state):
            if state.step == 5:
                raise KeyboardInterrupt

    def optimizer_of(model, opt_holder):
        class Grab(Strategy):
            name = "grab"

            def on_step_end(self, state):
                opt_holder["opt"] = state.optimizer
        return Grab()

    torch.manual_seed(0)
    ref_holder = {}
    ref_model, _ = train_stage(make_model(tokenizer), tokenizer, ExampleStream(examples, 0),
                               [build_strategy("af", every=3), optimizer_of(None, ref_holder)], tcfg, 8,
                               Accelerator(cpu=True), ctx())

    import tempfile
    from pathlib import Path
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train_stage(make_model(tokenizer), tokenizer, ExampleStream(examples, 0), [build_strategy("af", every=3), Crash()],
                    tcfg, 8, Accelerator(cpu=True), ctx(), Checkpointer(folder, 2))
    holder = {}
    torch.manual_seed(123)  # a different RNG state: the checkpoint must restore it
    model, _ = train_stage(make_model(tokenizer), tokenizer, ExampleStream(examples, 0),
                           [build_strategy("af", every=3), optimizer_of(None, holder)], tcfg, 8,
                           Accelerator(cpu=True), ctx(), Checkpointer(folder, 2))
    for (n, a), (_, b) in zip(model.named_parameters(), ref_model.named_parameters()):
        assert torch.equal(a, b), n
    ref_states = [ref_holder["opt"].state[p] for p in ref_model.parameters()]
    states = [holder["opt"].state[p] for p in model.parameters()]
    for a, b in zip(states, ref_states):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k])


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, model, monkeypatch):
    import errno

    from adaptlang import checkpoint

    ck = Checkpointer(tmp_path, 1)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ck.save(1, model, opt, sched, None, [], {"tokens": 0})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(UserError, match="disk full while writing checkpoint .* is intact"):
        ck.save(2, model, opt, sched, None, [], {"tokens": 0})
    assert ck.latest().name == "step-000001" and not (tmp_path / "step-000002").exists()


def test_resume_errors(tmp_path, reference, capsys):
    assert cli_main(["resume", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert cli_main(["resume", str(reference)]) == 2
    assert "already complete" in capsys.readouterr().err
