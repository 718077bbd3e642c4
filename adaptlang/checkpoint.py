"""Mid-stage checkpoints, written so that a kill at any moment leaves a usable one.

Layout, under ``runs/<name>/stages/<stage>/checkpoints/``::

    step-000040/            model.safetensors, optimizer.pt, rng.pt, state.json,
                            strategies.json (+ strategies.safetensors), MANIFEST.json, COMPLETE
    latest                  text file naming the newest complete step folder

A checkpoint folder is written in full, ``COMPLETE`` last, and only then does ``latest``
(written atomically) point at it; the one before it is kept (the fallback of a damaged newest
one), older folders are removed. A folder without
``COMPLETE`` (killed mid-write) is never read. Weights are safetensors; optimizer and RNG
state are our own files, read back with ``torch.load(weights_only=True)`` (no pickle of
arbitrary objects). ``state.json`` holds the step, the data streams' positions and the
running training figures; every strategy's ``state_dict`` is in ``strategies.json``, its
tensors in ``strategies.safetensors`` (adaptlang.state_io).

``MANIFEST.json`` (written atomically, after every other file) holds each file's sha256, the
step, the data stream's position and the run's identity (``run_identity``: a hash of the
resolved config and seed). A resume verifies it, and checks state.json's step and stream
position against it (a position beyond the stream is refused); a damaged or edited newest
checkpoint falls back to the one kept before it, saying so, and with none left the damage is
refused in one line naming the file. A checkpoint of another run is refused. A fresh stage never loads a checkpoint: one found there was written by someone
else, and is removed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .errors import UserError
from .rundir import disk_full_error, is_disk_full, parameter_bytes, size_of, write_atomic, write_json
from .state_io import load_state, save_state

log = logging.getLogger("adaptlang")
IDENTITY_EXCLUDES = ("name", "output_dir", "overwrite")


def run_identity(cfg) -> str:
    """A run's identity: a hash of its resolved config (seed included) without the keys that only
    say where it is written (name, output_dir, overwrite)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    for key in IDENTITY_EXCLUDES:
        plain.pop(key, None)
    if isinstance(plain.get("model"), dict):  # whether foreign code may run does not change the result
        plain["model"] = {k: v for k, v in plain["model"].items() if k != "trust_remote_code"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_bytes(model, moments: bool = True) -> int:
    """About the size of a checkpoint of ``model``: its weights and AdamW's two moments (only
    the weights with ``moments=False``: a saved model)."""
    return parameter_bytes(model) * (3 if moments else 1)


class Checkpointer:
    """``identity``: the run's (``run_identity``), written into every checkpoint; a checkpoint of
    another identity is refused. ``fresh``: the stage starts anew (not a resume), so any
    checkpoint found was written by someone else and is ignored, and removed when ``owner``
    (rank 0)."""

    def __init__(self, folder: Path, every: int, identity: str | None = None, fresh: bool = False,
                 owner: bool = True):
        self.folder = Path(folder)
        self.every = int(every)
        self.identity, self.fresh, self.owner = identity, fresh, owner

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
        previous = self.latest()  # kept until the next one is complete: the fallback of a damaged one
        try:
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
            save_model(model, str(path / "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       path / "optimizer.pt")
            torch.save({"torch": torch.get_rng_state(), "python": _python_rng()}, path / "rng.pt")
            write_json(path / "state.json", {
                "run": self.identity,
                "step": step,
                "stream": _stream_state(stream),
                "progress": progress,
            })
            save_state(path, "strategies", {s.name: s.state_dict() for s in strategies})
            write_json(path / MANIFEST, {"step": step, "run": self.identity, "stream": _stream_state(stream),
                                         "files": {f.name: sha256(f) for f in sorted(path.iterdir())
                                                   if f.is_file() and f.name != MANIFEST}})
            (path / "COMPLETE").write_text("ok\n")
            write_atomic(self.folder / "latest", path.name + "\n")
        except (OSError, RuntimeError) as exc:
            shutil.rmtree(path, ignore_errors=True)
            if is_disk_full(exc):
                previous = self.latest()
                needs = size_of(previous) if previous else checkpoint_bytes(model)
                error = disk_full_error("checkpoint", path, needs)
                raise type(error)(f"{error}; the previous checkpoint ({previous or 'none'}) is intact") from None
            raise
        for old in self.folder.glob("step-*"):
            if old not in (path, previous):
                shutil.rmtree(old, ignore_errors=True)
        return path

    def candidates(self) -> list[Path]:
        """The complete checkpoints, the newest (``latest``) first, then the one kept before it."""
        latest = self.latest()
        rest = sorted((p for p in self.folder.glob("step-*") if (p / "COMPLETE").is_file() and p != latest),
                      reverse=True)
        return ([latest] if latest else []) + rest

    def load(self, model, optimizer, scheduler, stream, strategies) -> dict:
        """Restore everything from the newest checkpoint that verifies; a damaged newest one
        falls back to the one kept before it, saying so (and is removed, by the owner); with
        none left, the damage is refused in one line."""
        found = self.candidates()
        if not found:
            return {}
        if self.fresh:
            log.warning("ignoring checkpoint %s: this run did not write it%s", found[0],
                        " (removed)" if self.owner else "")
            if self.owner:
                self.clear()
            return {}
        first_error = None
        for path in found:
            try:
                resumed = self._load(path, model, optimizer, scheduler, stream, strategies)
            except Damaged as exc:
                first_error = first_error or exc
                continue
            if path != found[0]:
                log.warning("%s; resuming from the previous good checkpoint %s (step %d) instead%s",
                            str(first_error).split("; remove")[0], path, resumed["step"],
                            ", the damaged one removed" if self.owner else "")
                if self.owner:
                    for bad in found[:found.index(path)]:
                        shutil.rmtree(bad, ignore_errors=True)
                    write_atomic(self.folder / "latest", path.name + "\n")
            return resumed
        raise first_error

    def _load(self, path: Path, model, optimizer, scheduler, stream, strategies) -> dict:
        try:
            written_by = json.loads((path / "state.json").read_text()).get("run")
        except (OSError, ValueError, AttributeError):
            written_by = None
        if self.identity is not None and written_by is not None and written_by != self.identity:
            raise UserError(f"checkpoint {path} was written by another run (identity {written_by}, this run "
                            f"{self.identity}: config or seed differ); refusing to resume from it")
        step, recorded_stream = verify(path)
        current = "state.json"  # checked before anything is restored
        try:
            state = json.loads((path / current).read_text())
            if state["step"] != step:
                raise ValueError(f"step {state['step']} where the checkpoint is of step {step}")
            if recorded_stream is not None and state["stream"] != recorded_stream:
                raise ValueError("data-stream position differs from the manifest's")
            if state["stream"] is not None:
                check_stream_state(stream, state["stream"])
            current = "model.safetensors"
            load_model(model, str(path / current))
            current = "optimizer.pt"
            opt = torch.load(path / current, weights_only=True)
            optimizer.load_state_dict(opt["optimizer"])
            scheduler.load_state_dict(opt["scheduler"])
            current = "rng.pt"
            rng = torch.load(path / current, weights_only=True)
            torch.set_rng_state(rng["torch"])
            random.setstate(_from_list(rng["python"]))
            if state["stream"] is not None:
                stream.load_state_dict(state["stream"])
            current = "strategies.json"
            states = load_state(path, "strategies")
            for strategy in strategies:
                if strategy.name in states:
                    strategy.load_state_dict(states[strategy.name])
            return {"step": state["step"], **state["progress"]}
        except UserError:
            raise
        except Exception as exc:  # a damaged or edited file: one line naming it, not a traceback
            raise damaged(path / current, exc) from None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Damaged(UserError):
    """A damaged or edited file of a run folder (one line naming it)."""


def damaged(path: Path, exc: BaseException | str) -> UserError:
    reason = exc if isinstance(exc, str) else (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return Damaged(f"cannot resume: {path} is damaged ({reason}); remove {path.parent} to restart that "
                   "stage from its beginning")


def _stream_state(stream):
    return stream.state_dict() if hasattr(stream, "state_dict") else None


def check_stream_state(stream, state, where: str = "stream") -> None:
    """A saved data-stream state that the stream can take: an (epoch, position) pair of
    non-negative integers with the position inside the stream's examples, for the stream and
    for every stream it is made of (replay's ``old``/``new``); raises ValueError otherwise."""
    if not isinstance(state, dict):
        raise ValueError(f"{where}: {state!r} is not a stream state")
    if "position" in state or "epoch" in state:
        epoch, position = state.get("epoch"), state.get("position")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, position)):
            raise ValueError(f"{where}: epoch {epoch!r}, position {position!r} are not counts")
        examples = getattr(stream, "examples", None)
        if examples is not None and position > len(examples):
            raise ValueError(f"{where}: position {position} is beyond the stream's {len(examples)} examples")
    for key, sub in state.items():
        if isinstance(sub, dict):
            check_stream_state(getattr(stream, key, None), sub, f"{where}.{key}")


def verify(path: Path) -> tuple[int, object]:
    """Check a checkpoint folder against its manifest (every file's sha256, the step); returns
    the step and the data-stream state it records (None without one). A folder written before
    manifests existed is checked by name only."""
    try:
        step = int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        raise damaged(path, "not a step-NNNNNN folder") from None
    manifest = path / MANIFEST
    if not manifest.is_file():
        return step, None
    try:
        entry = json.loads(manifest.read_text())
        files, recorded, stream = dict(entry["files"]), int(entry["step"]), entry.get("stream")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise damaged(manifest, exc) from None
    if recorded != step:
        raise damaged(manifest, f"step {recorded} in a folder of step {step}")
    for name, digest in files.items():
        if not (path / name).is_file():
            raise damaged(path / name, "missing")
        if sha256(path / name) != digest:
            raise damaged(path / name, "its checksum differs from the manifest")
    return step, stream


def _python_rng():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _from_list(state):
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)
