"""Issue #17: progress off a terminal, experiment trackers, train.compile; their bad input."""
import io
import json
import subprocess
import sys

import pytest
import torch

from adaptlang import UserError, load_config
from adaptlang.cli import main as cli_main
from adaptlang.plan import make_plan
from adaptlang.progress import Progress, clock, track
from adaptlang.trackers import benchmark_figures, check_trackers, hyperparameters

from conftest import QUICK, run_test_stage


class File(io.StringIO):  # a stream that is not a terminal (a log file, a pipe)
    def isatty(self):
        return False


def test_lines_every_n_steps_and_at_the_end():
    out = File()
    bar = Progress("stage pretrain", 5, every=2, seconds=3600, stream=out)
    lines = [bar.update(1, loss="1.0") for _ in range(5)]
    bar.close()
    printed = out.getvalue().splitlines()
    assert [bool(x) for x in lines] == [False, True, False, True, True]
    assert len(printed) == 3 and printed[0].startswith("[adaptlang] stage pretrain step 2/5 loss 1.0 elapsed ")
    assert " eta " in printed[0] and printed[-1].endswith("eta 0:00:00")


def test_lines_every_n_seconds_whichever_first():
    out = File()
    bar = Progress("stage x", 100, every=1000, seconds=0, stream=out)
    for _ in range(3):
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 3


def test_terminal_gets_a_bar_not_lines():
    class Tty(File):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress("stage x", 4, every=1, stream=out)
    for _ in range(4):
        assert bar.update(1) is not None  # still returned for train.log
    bar.close()
    assert "[adaptlang]" not in out.getvalue() and "4/4" in out.getvalue()


def test_track_and_clock():
    assert list(track(range(3), "eval x", seconds=3600)) == [0, 1, 2]
    assert clock(3725) == "1:02:05" and clock(float("nan")) == "?"


def test_benchmark_figures_and_hyperparameters_are_flat_scalars():
    results = {"perplexity": {"classes": {"overall": {"bits_per_char": 2.5}},
                              "languages": {"en": {"ppl_token": 9.0, "class": "pretraining"}}, "skipped": {}}}
    assert benchmark_figures(results) == {"eval/perplexity/overall/bits_per_char": 2.5,
                                          "eval/perplexity/en/ppl_token": 9.0}
    hp = hyperparameters({"train": {"lr": 0.1, "betas": [0.9, 0.95]}, "name": None})
    assert hp["train.lr"] == 0.1 and hp["train.betas.0"] == 0.9 and hp["name"] == "None"


@pytest.mark.parametrize("value, message", [
    ("[tensorbord]", "unknown tracker 'tensorbord'. Did you mean 'tensorboard'?"),
    ("[nope]", "Valid: mlflow, tensorboard, trackio, wandb"),
])
def test_unknown_tracker_is_one_line(value, message, capsys):
    assert cli_main(["config", f"train.report_to={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_tracker_package_is_one_line(monkeypatch):
    import adaptlang.trackers as trackers

    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("adaptlang_no_such_module", "wandb"))
    with pytest.raises(UserError, match=r"tracker 'wandb' needs the package 'wandb'.*pip install wandb"):
        check_trackers(["wandb"])
    assert check_trackers("none") == [] and check_trackers([]) == []


def test_compile_without_a_compiler_is_refused_in_the_plan(monkeypatch):
    import adaptlang.compiling as compiling

    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs a C.. compiler"):
        make_plan(load_config(["train.compile=true", "device=cpu"]))
    make_plan(load_config(["train.compile=false", "device=cpu"]))


@pytest.mark.slow
def test_compiled_training_matches_eager(tokenizer, monkeypatch):
    """train.compile wires a compiled forward (here Dynamo with its eager backend: the
    wiring, not Inductor's kernels, which take a minute to build on this CPU) and fused
    AdamW; the model's parameters and names stay those of the plain model."""
    import adaptlang.compiling as compiling
    from conftest import make_model
    from adaptlang.data import ExampleStream

    import adaptlang.train as train

    monkeypatch.setattr(train, "Compilation",
                        lambda: compiling.Compilation(lambda x: torch.compile(x, backend="eager")))
    examples = [{"input_ids": list(range(3, 40)), "labels": list(range(3, 40))} for _ in range(8)]
    results = {}
    for compile_ in (False, True):
        model = make_model(tokenizer)
        names = [n for n, _ in model.named_parameters()]
        result = run_test_stage(model, tokenizer, [], ExampleStream(examples, 0), steps=3,
                                train={"compile": compile_})
        assert [n for n, _ in result.model.named_parameters()] == names
        results[compile_] = result.train["final_loss"]
        assert result.train.get("compiled", False) is compile_
    assert results[True] == pytest.approx(results[False], abs=1e-3)


@pytest.mark.slow
def test_a_failing_compile_backend_falls_back_to_eager_with_one_line(tokenizer, monkeypatch, capsys):
    import adaptlang.compiling as compiling
    import adaptlang.train as train
    from conftest import make_model
    from adaptlang.data import ExampleStream

    def broken(module):
        def backend(gm, example_inputs):
            raise RuntimeError("no C++ toolchain (simulated)")
        return torch.compile(module, backend=backend)

    monkeypatch.setattr(train, "Compilation", lambda: compiling.Compilation(broken))
    examples = [{"input_ids": list(range(3, 30)), "labels": list(range(3, 30))} for _ in range(8)]
    result = run_test_stage(make_model(tokenizer), tokenizer, [], ExampleStream(examples, 0), steps=2,
                            train={"compile": True})
    err = capsys.readouterr().err
    assert result.train["compiled"] is False and result.train["steps"] == 2
    assert err.count("adaptlang: warning: train.compile: torch.compile failed") == 1, err
    assert "no C++ toolchain (simulated)" in err


@pytest.mark.slow
def test_cli_off_a_terminal_prints_progress_and_writes_tensorboard(tmp_path):
    """The CLI with its output going to files (as under nohup/SLURM/CI): progress lines on
    stderr and in train.log; tensorboard event files that read back with the losses and
    benchmark figures."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "adaptlang.cli", "run", "name=p", "train.log_every=2",
                               "train.report_to=[tensorboard]", *QUICK], cwd=tmp_path, stdout=out, stderr=err,
                              timeout=600)
    stderr = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    lines = [x for x in stderr.splitlines() if x.startswith("[adaptlang] stage ")]
    for stage in ("pretrain", "adapt", "instruct"):  # QUICK: 3 steps; lines at step 2 and at the end
        assert [x.split()[4] for x in lines if x.split()[2] == stage] == ["2/3", "3/3"], lines
    line = lines[0]
    for word in (" loss ", " lr ", " tokens/s ", " elapsed ", " eta "):
        assert word in line, line
    assert "[adaptlang] eval perplexity batch" in stderr
    log = (tmp_path / "runs" / "p" / "train.log").read_text()
    assert "stage instruct step 3/3 loss" in log and "eval perplexity batch" in log
    events = EventAccumulator(str(tmp_path / "runs" / "p" / "trackers" / "adaptlang"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 10))  # one axis, 3 stages x 3
    metrics = json.loads((tmp_path / "runs" / "p" / "metrics.json").read_text())
    for stage, step in (("pretrain", 3), ("adapt", 6), ("instruct", 9)):
        loss = metrics["stages"][stage]["train"]["final_loss"]
        assert events.Scalars(f"train/{stage}/loss")[-1].step == step
        bpc = metrics["stages"][stage]["eval"]["perplexity"]["classes"]["overall"]["bits_per_char"]
        (scalar,) = [e for e in events.Scalars("eval/perplexity/overall/bits_per_char") if e.step == step]
        assert scalar.value == pytest.approx(bpc, rel=1e-5)
        assert loss > 0
