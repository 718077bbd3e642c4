"""Two processes (CPU, gloo, launched by ``accelerate launch``; sharded with ``train.fsdp``, by
torchrun) train like one process with the same global batch: the same per-step losses and
final weights within float tolerance, with af resets and the replay buffer identical on both
ranks, and EWC's and SI's importances, their penalties and A-GEM's projections the same on
both ranks and as in one process, replicated (DDP) and sharded, a cut and resumed stage
equal to its uninterrupted run (tests/mp_train.py is the script)."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import mp_train

pytestmark = pytest.mark.slow  # whole pipelines / several processes

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def launch(out: Path, processes: int, *args: str) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", str(ROOT / "tests" / "mp_train.py"), str(out), *args]
    done = subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def torchrun(out: Path, processes: int, *args: str, script: str = "mp_train.py") -> None:
    """``torchrun --nproc_per_node N tests/<script> ...`` (the sharded runs' launcher)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_port", str(free_port()), str(ROOT / "tests" / script), str(out), *args]
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), ENV["PYTHONPATH"]])}
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


AF_EVERY = 2


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The reference: af + replay, 6 steps, in this process (world size 1), unsharded."""
    out = tmp_path_factory.mktemp("one")
    mp_train.main(str(out), 6, AF_EVERY)
    return json.loads((out / "rank0.json").read_text())


def test_two_processes_give_the_one_process_loss_curve(tmp_path, one_process):
    launch(tmp_path, 2, "6", str(AF_EVERY))
    one = one_process
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert one["world"] == 1 and r0["world"] == r1["world"] == 2
    assert not r0["sharded"]
    assert r0 == r1, "the two ranks disagree (weights, losses, af resets or counts)"
    assert one["af_resets"] == r0["af_resets"] == 2
    assert one["tokens"] == r0["tokens"] and one["loss_tokens"] == r0["loss_tokens"]
    assert len(one["losses"]) == len(r0["losses"]) == 6
    assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-5)
    assert len(set(round(x, 3) for x in one["losses"])) > 3, "the loss curve should move"
    assert r0["weights_head"] == pytest.approx(one["weights_head"], abs=1e-5)
    assert r0["weights_abs"] == pytest.approx(one["weights_abs"], rel=1e-6)


def test_two_sharded_processes_give_the_one_process_loss_curve_and_weights(tmp_path, one_process):
    """train.fsdp (FSDP2 through accelerate, gloo, torchrun): each rank holds half the embedding
    rows while training, af resets sharded rows and their optimizer state as one process does,
    and the stage hands back a whole plain transformers model equal to one process's."""
    torchrun(tmp_path, 2, "6", str(AF_EVERY), "fsdp")
    one = one_process
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["sharded"] and not one["sharded"]
    assert r0 == r1, "the two ranks disagree (weights, losses, af resets or counts)"
    assert r0["embedding_rows"] == [n // 2 for n in one["embedding_rows"]], "the embedding was not sharded"
    assert r0["plain"] and one["plain"], "the stage did not hand back a plain whole transformers model"
    assert one["af_resets"] == r0["af_resets"] == 2
    assert one["tokens"] == r0["tokens"] and one["loss_tokens"] == r0["loss_tokens"]
    assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-5)
    assert len(r0["weights"]) == len(one["weights"]) == one["weights_count"] > 10_000
    assert max(abs(a - b) for a, b in zip(r0["weights"], one["weights"])) <= 1e-5, "final parameters differ"


# every built-in strategy, in whole sharded pipelines (ewc, si and agem against one process: test_ewc_si_and_agem_...)
SHARDED_GROUPS = ["af+vocab+lora+merge+replay+xling", "lwf+mlm+ewc+si+agem"]


def test_every_strategy_trains_sharded_and_a_sharded_run_resumes(tmp_path):
    torchrun(tmp_path, 2, *SHARDED_GROUPS, script="mp_strategies.py")
    results = json.loads((tmp_path / "results.json").read_text())
    for group in SHARDED_GROUPS:
        assert results["groups"][group]["plain"], f"{group}: a stage model does not load with transformers"
    assert results["interrupted"] and results["resumed_stages"] == ["adapt", "instruct", "pretrain"]
    assert results["resume_equal"], "the resumed sharded run's stage models differ from the uninterrupted run's"


@pytest.mark.skipif(importlib.util.find_spec("avalanche") is None and not os.environ.get("CI"),
                    reason="avalanche-lib not installed (the README's test command installs it)")
def test_ewc_si_and_agem_agree_with_one_process_replicated_and_sharded_and_resume(tmp_path):
    """Two stages with ewc, si and agem together (the first stage's importances, anchors and
    memory act in the second); two processes, first replicated (DDP) then sharded (FSDP2), in
    one torchrun. Sharded, the penalties run on each rank's pieces summed over the ranks, SI's
    path integral is gathered every step, A-GEM's dot products are all-reduced."""
    mp_train.main_memory(str(tmp_path), 4)  # one process
    torchrun(tmp_path, 2, "memory", "4", "ddp", "fsdp")
    one = json.loads((tmp_path / "rank0.json").read_text())
    assert one["ewc_penalty"] > 0 and one["si_penalty"] > 0 and one["agem_projections"] > 0, "a strategy did not act"
    assert sum(one["ewc_importances"]) > 0 and sum(one["si_importances"]) > 0
    assert len(set(round(x, 3) for x in one["losses"])) > 4, "the loss curve should move"
    for mode in ("ddp", "fsdp"):
        r0, r1 = (json.loads((tmp_path / mode / f"rank{r}.json").read_text()) for r in (0, 1))
        assert r0 == r1, f"{mode}: the two ranks disagree (importances, penalties, losses or weights)"
        assert r0["world"] == 2 and r0["sharded"] == (mode == "fsdp") and r0["plain"]
        assert r0["agem_projections"] == one["agem_projections"], mode
        for key in ("ewc_importances", "si_importances"):
            assert r0[key] == pytest.approx(one[key], rel=1e-5, abs=1e-8), (mode, key)
        for key in ("ewc_penalty", "si_penalty"):
            assert r0[key] == pytest.approx(one[key], rel=1e-5), (mode, key)
        assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-5), mode
        assert len(r0["weights"]) == len(one["weights"]) == 22112
        assert max(abs(a - b) for a, b in zip(r0["weights"], one["weights"])) <= 1e-5, f"{mode}: final parameters differ"
    for mode, run in (("one process", one), ("ddp", json.loads((tmp_path / "ddp" / "rank0.json").read_text())),
                      ("fsdp", r0)):  # stage 2 cut after step 3, resumed from its step-2 checkpoint: bit for bit
        assert run["resumed_losses"] == run["losses"][-2:] and run["resumed_weights"] == run["weights"], \
            f"{mode}: the resumed stage differs from the uninterrupted one"
