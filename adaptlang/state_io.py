"""Strategy state on disk: JSON for the values, safetensors for the tensors.

A strategy's ``state_dict`` may hold torch tensors anywhere in its nested dicts and lists
(EWC's importances, SI's trajectory, LwF's teacher weights). ``save_state`` writes
``<stem>.json`` with every tensor replaced by ``{"__tensor__": key}`` and
``<stem>.safetensors`` with the tensors under those keys; ``load_state`` puts them back,
bit for bit. No pickle is involved.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .rundir import write_json

TENSOR = "__tensor__"


def split_tensors(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``obj`` with tensors replaced by references; the tensors go into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = path or "tensor"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()  # clone: no shared storage in safetensors
        return {TENSOR: key}
    if isinstance(obj, dict):
        return {str(k): split_tensors(v, tensors, f"{path}/{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    return obj


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {TENSOR}:
            return tensors[obj[TENSOR]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_state(folder: Path, stem: str, state: dict) -> None:
    """Write ``folder/<stem>.json`` (and ``<stem>.safetensors`` when there are tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    plain = split_tensors(state, tensors)
    blob = Path(folder) / f"{stem}.safetensors"
    if tensors:
        tmp = blob.with_name(f".{blob.name}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, blob)
    else:
        blob.unlink(missing_ok=True)
    write_json(Path(folder) / f"{stem}.json", plain)  # last: its presence means the pair is complete


def load_state(folder: Path, stem: str) -> dict:
    plain = json.loads((Path(folder) / f"{stem}.json").read_text())
    blob = Path(folder) / f"{stem}.safetensors"
    tensors = load_file(str(blob)) if blob.is_file() else {}
    return join_tensors(plain, tensors)
