"""Mid-stage checkpoints, written so that a kill at any moment leaves a usable one.

Layout, under ``runs/<name>/stages/<stage>/checkpoints/``::

    step-000040/            model.safetensors, optimizer.pt, rng.pt, state.json,
                            strategies.json (+ strategies.safetensors), COMPLETE
    latest                  text file naming the newest complete step folder

A checkpoint folder is written in full, ``COMPLETE`` last, and only then does ``latest``
(written atomically) point at it; older folders are removed afterwards. A folder without
``COMPLETE`` (killed mid-write) is never read. Weights are safetensors; optimizer and RNG
state are our own files, read back with ``torch.load(weights_only=True)`` (no pickle of
arbitrary objects). ``state.json`` holds the step, the data streams' positions and the
running training figures; every strategy's ``state_dict`` is in ``strategies.json``, its
tensors in ``strategies.safetensors`` (adaptlang.state_io).
"""
from __future__ import annotations

import errno
import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .errors import UserError
from .rundir import write_atomic, write_json
from .state_io import load_state, save_state


class Checkpointer:
    def __init__(self, folder: Path, every: int):
        self.folder = Path(folder)
        self.every = int(every)

    def due(self, step: int, total: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < total

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text().strip()
        return path if (path / "COMPLETE").is_file() else None

    def save(self, step: int, model, optimizer, scheduler, stream, strategies, progress: dict) -> Path:
        path = self.folder / f"step-{step:06d}"
        try:
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
            save_model(model, str(path / "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       path / "optimizer.pt")
            torch.save({"torch": torch.get_rng_state(), "python": _python_rng()}, path / "rng.pt")
            write_json(path / "state.json", {
                "step": step,
                "stream": stream.state_dict() if hasattr(stream, "state_dict") else None,
                "progress": progress,
            })
            save_state(path, "strategies", {s.name: s.state_dict() for s in strategies})
            (path / "COMPLETE").write_text("ok\n")
            write_atomic(self.folder / "latest", path.name + "\n")
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                raise UserError(f"disk full while writing checkpoint {path}; the previous checkpoint "
                                f"({self.latest() or 'none'}) is intact: free space and resume") from None
            raise
        for old in self.folder.glob("step-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def load(self, model, optimizer, scheduler, stream, strategies) -> dict:
        path = self.latest()
        if path is None:
            return {}
        load_model(model, str(path / "model.safetensors"))
        opt = torch.load(path / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        random.setstate(_from_list(rng["python"]))
        state = json.loads((path / "state.json").read_text())
        if state["stream"] is not None:
            stream.load_state_dict(state["stream"])
        states = load_state(path, "strategies")
        for strategy in strategies:
            if strategy.name in states:
                strategy.load_state_dict(states[strategy.name])
        return {"step": state["step"], **state["progress"]}

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _python_rng():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _from_list(state):
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)
