"""The run's temporary folder of memory-mapped training blocks (``adaptlang-blocks-*`` in the
system temp), removed at the end of the run, at interpreter exit, and -- when a run was killed
(``kill -9`` leaves it) -- by the next run that starts.

Each folder holds ``.owner``, on which its run keeps an ``fcntl.flock`` for its life: the
kernel drops it when the run dies, so a folder whose ``.owner`` can be locked belongs to no
living run (however its PID has been reused since) and is removed.
"""
from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "adaptlang-blocks-"
OWNER = ".owner"
UNOWNED_AGE = 24 * 3600  # a folder without .owner (written before owners existed) older than this is stale


class BlockCache:
    """A ``tempfile.TemporaryDirectory`` look-alike (``name``, ``cleanup()``) that sweeps the
    folders of dead runs when made and removes its own at exit."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or tempfile.gettempdir())
        sweep(self.root)
        self.name = tempfile.mkdtemp(prefix=PREFIX, dir=self.root)
        self._fd = os.open(Path(self.name) / OWNER, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        atexit.register(self.cleanup)

    def cleanup(self) -> None:
        if self._fd < 0:
            return
        shutil.rmtree(self.name, ignore_errors=True)
        os.close(self._fd)
        self._fd = -1
        atexit.unregister(self.cleanup)


def sweep(root: Path) -> list[Path]:
    """Remove the block folders under ``root`` that no living run holds; returns them."""
    removed = []
    for folder in Path(root).glob(PREFIX + "*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            if _stale(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:  # another run removed it meanwhile, or it is not ours to read
            continue
    return removed


def _stale(folder: Path) -> bool:
    owner = folder / OWNER
    if not owner.is_file():
        return time.time() - folder.stat().st_mtime > UNOWNED_AGE  # young: its run is still creating it
    fd = os.open(owner, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops our flock at once
    return True
