"""The run directory: one folder per run, written so that nothing half-done looks complete.

    runs/<name>/
      config.yaml          resolved config (rerun: adaptlang run --config runs/<name>/config.yaml)
      status.json          {"status": "running" | "complete" | "failed", ...}
      metrics.json         every metric, per stage (schema: docs/run-folder.md)
      report.md            the human report
      train.log            the log
      stages/<stage>/model transformers model + tokenizer (safetensors)

JSON and text files are written to a temporary name and renamed (atomic on POSIX); a model
folder is saved under a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import UserError


class DiskFull(UserError):
    """The disk filled up while the run wrote a file: the run is marked failed (resumable once
    space is freed), never removed as a mistake in the input."""


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, however it arrives: an OSError, or torch.save's / safetensors' RuntimeError."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError)) and ("no space left" in text or "disk quota" in text
                                                         or "file write failed" in text)


def size_of(path: Path) -> int:
    """Bytes in ``path`` (a file, or a folder's files)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def disk_full_error(what: str, path: Path, needs: int = 0) -> DiskFull:
    """The one line for a full disk: what was being written, where, and how much space it needs."""
    try:
        free = shutil.disk_usage(next(p for p in [Path(path), *Path(path).parents] if p.exists())).free
        room = f"{free / 2**20:,.1f} MB free"
    except (OSError, StopIteration):
        room = "free space unknown"
    need = f"needs about {needs / 2**20:,.1f} MB, " if needs else ""
    return DiskFull(f"disk full while writing {what} {path} ({need}{room}); free space and `adaptlang resume "
                    f"{_run_folder(Path(path))}`")


def _run_folder(path: Path) -> Path:
    for p in [path, *path.parents]:
        if (p / "config.yaml").is_file():
            return p
    return path.parent


def plain_name(value, what: str) -> str:
    """``value`` as one plain folder name, or one line saying why not: no path separator, not
    ``.``/``..``, no newline or other control character (a folder name that breaks every listing)."""
    text = str(value)
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if not text or "/" in text or "\\" in text or text in (".", "..") or bad is not None:
        why = f"the control character {bad!r}" if bad is not None else "a path, not a plain folder name"
        raise UserError(f"{what}={text!r}: {why}; use a plain folder name (letters, digits, -_.+=)")
    return text


def confined(root: Path, path: Path, what: str) -> Path:
    """``path``, refused in one line unless it lies inside ``root`` (symbolic links resolved):
    every file a command writes stays inside the folder the user named."""
    root_real, real = Path(root).resolve(), Path(path).resolve()
    if real != root_real and root_real not in real.parents:
        raise UserError(f"{what}: {path} would be written outside {root}; refusing")
    return path


def check_space(folder: Path, needs: int, what: str) -> None:
    """Refuse (DiskFull, one line) when the disk holding ``folder`` has less than ``needs``
    bytes free: found before a stage trains, not at its first checkpoint."""
    try:
        free = shutil.disk_usage(next(p for p in [Path(folder), *Path(folder).parents] if p.exists())).free
    except (OSError, StopIteration):
        return
    if free < needs:
        raise DiskFull(f"not enough free space for {what} in {folder}: needs about {needs / 2**20:,.1f} MB, "
                       f"{free / 2**20:,.1f} MB free; free space and `adaptlang resume {_run_folder(Path(folder))}`")


def run_name(label: str | list[str], seed: int) -> str:
    """The default run folder name: ``<label>-s<seed>``, the label being the strategies joined
    with '+' ('none' without any) or a grid's run label."""
    if not isinstance(label, str):
        label = "+".join(label) or "none"
    return f"{label}-s{int(seed)}"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_status(path: Path) -> str:
    try:
        return json.loads((path / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return "unknown"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def check_free(output_dir: str, name: str, overwrite: bool = False) -> Path:
        plain_name(name, "name")
        if Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise UserError(f"output_dir={output_dir}: a file is in the way; runs go into a folder of that name")
        path = Path(output_dir) / name
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: a file is in the way of the run folder; remove it or choose another name=...")
        if path.exists() and not overwrite:
            status = read_status(path)
            hint = f"`adaptlang resume {path}` continues it, " if status in ("failed", "running") else ""
            raise UserError(f"run directory {path} already exists (status: {status}); {hint}"
                            "pass overwrite=true to replace it, or choose another name=...")
        return path

    @classmethod
    def create(cls, output_dir: str, name: str, overwrite: bool = False) -> "RunDir":
        path = cls.check_free(output_dir, name, overwrite)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        run = cls(path)
        run.set_status("running")
        return run

    @classmethod
    def open(cls, output_dir: str, name: str) -> "RunDir":
        path = Path(output_dir) / name
        if not (path / "config.yaml").is_file():
            raise UserError(f"cannot resume: {path} is not a run directory (no config.yaml)")
        status = read_status(path)
        if status == "complete":
            raise UserError(f"run {path} is already complete; nothing to resume")
        return cls(path)

    def completed_stages(self) -> dict:
        """Stages recorded in metrics.json whose model folder exists, and the starting model's
        evaluation (``base``: no model folder of its own)."""
        try:
            stages = json.loads((self.path / "metrics.json").read_text())["stages"]
        except (OSError, ValueError, KeyError):
            return {}
        return {name: st for name, st in stages.items()
                if (isinstance(st, dict) and st.get("starting_model"))
                or ((self.stage_dir(name) / "model" / "config.json").is_file()
                    and (self.stage_dir(name) / "strategies.json").is_file())}

    def set_status(self, status: str, **extra) -> None:
        write_json(self.path / "status.json", {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})

    def mark_failed(self, error: str) -> None:
        """status.json and metrics.json (when written) say ``failed``, so that no reader takes
        the stages already in metrics.json for a finished run."""
        self.set_status("failed", error=error[:1000], resume=f"adaptlang resume {self.path}")
        try:
            metrics = json.loads((self.path / "metrics.json").read_text())
        except (OSError, ValueError):
            return
        write_json(self.path / "metrics.json", {**metrics, "status": "failed"})

    def stage_dir(self, stage: str) -> Path:
        return self.path / "stages" / stage

    def save_model(self, stage: str, model, tokenizer) -> Path:
        final = self.stage_dir(stage) / "model"
        tmp = final.with_name(".model.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        except (OSError, RuntimeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(exc):
                raise disk_full_error(f"the {stage} model", final, parameter_bytes(model)) from None
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final


def parameter_bytes(model) -> int:
    """The bytes of ``model``'s parameters (a saved model's size, about)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


class RunLock:
    """The lock on a run folder, held for the run's life: ``<output_dir>/.<name>.lock`` (beside the
    folder, so that ``overwrite=true`` can replace the folder while holding it).

    The file names its holder (``{"pid", "host", "time"}``) and is held with ``fcntl.flock`` on
    an open descriptor, so that two processes never both take it: the kernel drops the flock
    when the holder dies. The flock is the truth: a lock file of this host whose flock is free
    (a run killed with ``kill -9``, even when its PID has since been reused) is taken over with
    one line; a held flock, or a lock file from another host (whose flock this kernel may not
    see, e.g. over NFS), is refused with a line naming the holder.
    """

    def __init__(self, path: Path, fd: int, note: str | None = None, made_parent: bool = False):
        self.path, self.fd, self.note, self.made_parent = Path(path), fd, note, made_parent

    @staticmethod
    def path_for(output_dir: str | Path, name: str) -> Path:
        return Path(output_dir) / f".{name}.lock"

    @classmethod
    def acquire(cls, output_dir: str | Path, name: str) -> "RunLock":
        import fcntl
        import socket

        path = cls.path_for(output_dir, name)
        made_parent = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for _ in range(100):  # retried only when the file was replaced between open and flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    raise UserError(f"run folder {Path(output_dir) / name} is in use by PID {holder.get('pid', '?')}"
                                    f" on {holder.get('host', '?')} (lock {path}); wait for it to end or stop it") from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the holder released (removed) it after we opened it: open the new one
                    os.close(fd)
                    continue
                holder, note = _holder(fd), None
                pid = holder.get("pid")
                if isinstance(pid, int) and pid != os.getpid():
                    if holder.get("host") != host:
                        raise UserError(f"run folder {Path(output_dir) / name} is in use by PID {pid} on "
                                        f"{holder.get('host')} (lock {path}); remove the lock if that run is gone")
                    # we hold the flock, so its holder is gone; a running PID is a reused one
                    gone = "a reused PID, its run gone" if _alive(pid) else "no longer running"
                    note = f"took over the stale lock {path} of PID {pid} ({gone})"
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": host,
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode() + b"\n", 0)
                os.fsync(fd)
                return cls(path, fd, note, made_parent)
            except BaseException:
                os.close(fd)
                if made_parent:
                    _rmdir_if_empty(path)
                raise
        raise UserError(f"could not take the lock {path}: it keeps being replaced")

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()  # while still holding the flock: a waiter then retries on a new file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1
        if self.made_parent:  # a run that left nothing (a mistake found early) leaves no output_dir either
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def _rmdir_if_empty(lock: Path) -> None:
    lock.unlink(missing_ok=True)
    try:
        lock.parent.rmdir()
    except OSError:
        pass


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
