"""Faults a run must survive with one clear line: two processes on one run folder, a stale
lock, checkpoints from another run, a full disk, damaged files, foreign code, path escapes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import adaptlang
from adaptlang import UserError
from adaptlang.cli import main as cli_main
from adaptlang.rundir import RunLock

from conftest import QUICK

SETTINGS = [o for o in QUICK if not o.startswith("train.max_steps")] + ["train.max_steps=2"]


def cfg(out, *extra):
    return adaptlang.load_config(SETTINGS + [f"output_dir={out}", "name=r", *extra])


def fake_lock(out, pid, host=None, name="r"):
    path = RunLock.path_for(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return path


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def held_lock(tmp_path, live_pid):
    """A lock file naming a running PID whose flock is held (flock conflicts between two open
    descriptions even within one process)."""
    import fcntl

    path = fake_lock(tmp_path, live_pid)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield live_pid
    os.close(fd)


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---- the lock ------------------------------------------------------------------------------

def test_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock.acquire(tmp_path, "r")
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    # a second holder in another process is refused (flock held)
    code = ("import sys; from adaptlang.rundir import RunLock; from adaptlang.errors import UserError\n"
            f"try: RunLock.acquire({str(tmp_path)!r}, 'r')\n"
            "except UserError as e: print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and f"PID {os.getpid()}" in proc.stdout, proc.stderr
    lock.release()
    assert not lock.path.exists()
    RunLock.acquire(tmp_path, "r").release()


def test_run_on_a_folder_in_use_is_refused(tmp_path, held_lock, capsys):
    live_pid = held_lock
    assert cli_main(["run", *SETTINGS, f"output_dir={tmp_path}", "name=r"]) == 2
    err = capsys.readouterr().err
    assert f"in use by PID {live_pid}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_overwrite_and_resume_of_a_folder_in_use_are_refused(tmp_path, live_pid, capsys):
    import fcntl

    run = adaptlang.run(cfg(tmp_path))
    assert not RunLock.path_for(tmp_path, "r").exists()  # released at the end
    before = (run / "metrics.json").read_bytes()
    fd = os.open(fake_lock(tmp_path, live_pid), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert cli_main(["run", *SETTINGS, f"output_dir={tmp_path}", "name=r", "overwrite=true"]) == 2
    assert f"in use by PID {live_pid}" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == before  # not deleted under its holder
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    assert cli_main(["resume", str(run)]) == 2
    assert f"in use by PID {live_pid}" in capsys.readouterr().err
    os.close(fd)


def test_lock_of_a_reused_pid_is_taken_over(tmp_path, live_pid):
    """The flock is the truth: a lock file naming a running process that does not hold it (the
    PID of a killed run, reused since) is stale."""
    fake_lock(tmp_path, live_pid)
    lock = RunLock.acquire(tmp_path, "r")
    assert "stale lock" in lock.note and f"PID {live_pid}" in lock.note and "reused" in lock.note
    lock.release()


def test_lock_from_another_host_is_refused(tmp_path):
    fake_lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(UserError, match="PID 1 on elsewhere.example"):
        adaptlang.run(cfg(tmp_path))


def test_stale_lock_is_taken_over(tmp_path, dead_pid, capsys):
    fake_lock(tmp_path, dead_pid)
    run = adaptlang.run(cfg(tmp_path))
    assert "stale lock" in capsys.readouterr().err
    assert f"PID {dead_pid}" in (run / "train.log").read_text()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert not RunLock.path_for(tmp_path, "r").exists()


def test_lock_released_on_failure_and_early_mistake_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError):
        adaptlang.run(cfg(out, "model.name_or_path=/nonexistent/model"))
    assert not out.exists()


# ---- checkpoints carry the run's identity --------------------------------------------------

def _opt(model):
    import torch

    opt = torch.optim.AdamW(model.parameters())
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_identity_ignores_where_the_run_is_written(tmp_path):
    from adaptlang.checkpoint import run_identity

    a = run_identity(cfg(tmp_path))
    assert a == run_identity(adaptlang.load_config(SETTINGS + ["output_dir=/elsewhere", "name=x", "overwrite=true"]))
    assert a != run_identity(cfg(tmp_path, "seed=1"))


def test_foreign_checkpoint_refused_on_resume_and_ignored_when_fresh(tmp_path, model):
    from adaptlang.checkpoint import Checkpointer

    opt, sched = _opt(model)
    Checkpointer(tmp_path / "ck", 1, "aaaa").save(1, model, opt, sched, None, [], {"tokens": 0})
    with pytest.raises(UserError, match="written by another run"):
        Checkpointer(tmp_path / "ck", 1, "bbbb").load(model, opt, sched, None, [])
    assert Checkpointer(tmp_path / "ck", 1, "bbbb", fresh=True).load(model, opt, sched, None, []) == {}
    assert not (tmp_path / "ck").exists()  # removed


# ---- a full disk ---------------------------------------------------------------------------

def test_disk_full_while_checkpointing_is_one_line(tmp_path, monkeypatch, capsys):
    import torch

    from adaptlang import checkpoint

    real = torch.save

    def full(obj, path, *a, **k):
        if "step-000002" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0: "
                               "No space left on device")
        return real(obj, path, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full)
    settings = [o for o in SETTINGS if not o.startswith("train.max_steps")] + [
        "train.max_steps=3", "train.checkpoint_every=1"]
    assert cli_main(["run", *settings, f"output_dir={tmp_path}", "name=r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full while writing checkpoint" in err[0] and "MB" in err[0], err
    run = tmp_path / "r"
    folder = run / "stages" / "pretrain" / "checkpoints"
    assert (folder / "latest").read_text().strip() == "step-000001" and not (folder / "step-000002").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert not RunLock.path_for(tmp_path, "r").exists()
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert cli_main(["resume", str(run)]) == 0  # space freed: the run continues from step 1


def test_disk_full_while_saving_the_model(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    with pytest.raises(UserError, match=r"disk full while writing the pretrain model .*needs about"):
        adaptlang.run(cfg(tmp_path))
    run = tmp_path / "r"
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert not (run / "stages" / "pretrain" / ".model.tmp").exists()


# ---- damaged files -------------------------------------------------------------------------

def _damage(path, how):
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage{{")
    elif how == "edit-step":
        state = json.loads(path.read_text())
        state["step"] = 1
        path.write_text(json.dumps(state))


@pytest.mark.parametrize("name, how", [
    ("model.safetensors", "truncate"), ("optimizer.pt", "garbage"), ("rng.pt", "truncate"),
    ("state.json", "garbage"), ("state.json", "edit-step"), ("strategies.json", "garbage"),
    ("MANIFEST.json", "garbage"),
])
def test_damaged_checkpoint_file_is_named(tmp_path, model, name, how):
    from adaptlang.checkpoint import Checkpointer

    opt, sched = _opt(model)
    ck = Checkpointer(tmp_path / "ck", 1, "id")
    ck.save(2, model, opt, sched, None, [], {"tokens": 0})
    _damage(tmp_path / "ck" / "step-000002" / name, how)
    with pytest.raises(UserError, match=f"cannot resume: .*{name} is damaged") as info:
        ck.load(model, opt, sched, None, [])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, how", [
    ("state.json", "edit-step"), ("rng.pt", "garbage"), ("optimizer.pt", "truncate")])
def test_damaged_file_without_manifest_is_named(tmp_path, model, name, how):
    """A checkpoint whose manifest is gone (written before manifests) is still read with care."""
    from adaptlang.checkpoint import Checkpointer

    opt, sched = _opt(model)
    ck = Checkpointer(tmp_path / "ck", 1, "id")
    ck.save(2, model, opt, sched, None, [], {"tokens": 0})
    (tmp_path / "ck" / "step-000002" / "MANIFEST.json").unlink()
    _damage(tmp_path / "ck" / "step-000002" / name, how)
    with pytest.raises(UserError, match=f"{name} is damaged"):
        ck.load(model, opt, sched, None, [])


@pytest.mark.parametrize("target", ["strategies.json", "model/model.safetensors"])
def test_damaged_completed_stage_on_resume_is_one_line(tmp_path, target, capsys):
    run = adaptlang.run(cfg(tmp_path))
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    _damage(run / "stages" / "pretrain" / target, "truncate" if target.endswith("safetensors") else "garbage")
    capsys.readouterr()
    assert cli_main(["resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0] and "pretrain" in err[0], err


# ---- foreign code --------------------------------------------------------------------------

def test_trust_remote_code_from_a_run_folder_is_ignored(tmp_path, capsys):
    from adaptlang.config import load_config, to_yaml

    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg(tmp_path, "model.trust_remote_code=true")))
    assert load_config([], base=path).model.trust_remote_code is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ignored model.trust_remote_code=true" in err[0]
    assert load_config(["model.trust_remote_code=true"], base=path).model.trust_remote_code is True
