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
        if not name or "/" in name or name in (".", ".."):
            raise UserError(f"name='{name}': a run name must be a plain folder name")
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
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final
