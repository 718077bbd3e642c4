"""The user's files and sizes, checked by the plan before anything trains, one line each:

* (text files of ``data.train_files`` / ``data.eval_files`` are scanned by the plan itself,
  ``sources.bad_shard_line``: file, line and byte of the first non-UTF-8 text);
* local instruction files (``data.instructions``): each mapped column holds text (``messages``:
  a list of turns), the first row that does not named -- ``output: 5`` is refused before the
  first stage, not when the stage that reads it comes; optional roles may be absent;
* the model's config (a YAML model group, or a local folder's config.json): its sizes are
  positive integers (``hidden_size: "abc"`` is one line, not a traceback);
* each stage's batch against the machine's memory: a lower bound of what one micro-batch
  needs (its activations, one float32 vector per token per layer, and the token ids), refused
  when even that does not fit (``train.batch_size=100000000``);
* the run's name: a plain folder name (stage names: checked where the plan reads them) (no newline or other control character).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .rundir import plain_name

SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings", "vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "head_dim")
NUMBER_KEYS = ("initializer_range", "rms_norm_eps", "layer_norm_epsilon", "rope_theta")


def check_before_training(plan) -> None:
    """Every check of this module on ``plan`` (called at the end of ``make_plan``)."""
    cfg = plan.config
    plain_name(plan.name, "name")
    check_instruction_rows(cfg)
    check_batch_memory(plan)


# ---- instruction rows against the field mapping ----------------------------------------------

def check_instruction_rows(cfg) -> None:
    """Each local instruction source's mapped columns hold what its roles need."""
    from .instructions import user_sources
    from .instructions import files as instruction_files

    for name, raw in user_sources(cfg).items():
        spec = instruction_files.check_spec(name, raw)
        if spec["path"].startswith("hub:") or spec["streaming"] or not Path(spec["path"]).is_file():
            continue  # streamed and hub sources are checked as they are read
        ds = instruction_files._load(spec)
        required, optional = instruction_files.SHAPES[spec["shape"]]
        for role, column in spec["fields"].items():
            if column not in ds.column_names:
                if role in optional:
                    continue
                instruction_files.check_columns(spec, ds.column_names)  # names the missing column
            feature = ds.features[column]
            if role == "messages":
                ok = _is_list(feature)
            else:
                ok = getattr(feature, "dtype", None) in ("string", "large_string", "null")
            if ok:
                continue
            row, value = _first_bad_row(ds[column], role)
            want = "a list of {role, content} turns" if role == "messages" else "text"
            raise UserError(f"data.instructions.{name}: row {row} of {spec['path']} has {column}: {value!r} "
                            f"(field '{role}'); every row's {column} must be {want}")


def _is_list(feature) -> bool:
    import datasets

    return isinstance(feature, (list, datasets.Sequence)) or type(feature).__name__ in ("List", "LargeList")


def _first_bad_row(values, role: str) -> tuple[int, object]:
    for i, value in enumerate(values, 1):
        if role == "messages":
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                return i, value
        elif value is not None and not isinstance(value, str):
            return i, value
    return 0, "(mixed types)"


# ---- the model's config ---------------------------------------------------------------------

def check_model_config(cfg) -> None:
    """The sizes of a model built from config (the model group's keys), or of a local model
    folder's config.json, are positive integers; a config.json transformers cannot read is one
    line."""
    path = cfg.model.get("name_or_path")
    if path and (Path(str(path)) / "config.json").is_file():
        where = Path(str(path)) / "config.json"
        try:
            values = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"model config {where}: not JSON ({exc})") from None
        if not isinstance(values, dict):
            raise UserError(f"model config {where}: not a JSON object")
        _check_sizes(values, str(where))
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(str(path), trust_remote_code=bool(cfg.model.get("trust_remote_code")))
        except Exception as exc:  # noqa: BLE001 -- a field's type, as transformers validates it
            if not (isinstance(exc, TypeError) or "Validation" in type(exc).__name__):
                return  # an unknown architecture and the like: check_architecture says it better
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise UserError(f"model config {where}: {' '.join(lines[-2:])[:300] or type(exc).__name__}") from None
    elif not path:
        from omegaconf import OmegaConf

        _check_sizes(OmegaConf.to_container(cfg.model, resolve=True), "model")


def _check_sizes(values: dict, where: str) -> None:
    for key in SIZE_KEYS:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{where}: {key}={value!r}: expected a positive integer")
    for key in NUMBER_KEYS:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{where}: {key}={value!r}: expected a number")


# ---- a batch against the machine's memory ---------------------------------------------------

def model_shape(cfg) -> tuple[int, int] | None:
    """(hidden size, layers) of the run's starting model, None where unknown."""
    path = cfg.model.get("name_or_path")
    if path:
        try:
            values = json.loads((Path(str(path)) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    else:
        values = dict(cfg.model)
    hidden = values.get("hidden_size", values.get("n_embd"))
    layers = values.get("num_hidden_layers", values.get("n_layer"))
    return (int(hidden), int(layers)) if isinstance(hidden, int) and isinstance(layers, int) else None


def machine_memory(device: str) -> tuple[int, str] | None:
    """(bytes, what) a micro-batch can take: the accelerator's memory, else the free RAM."""
    import torch

    from .models import available_memory

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    free = available_memory()
    return (free, "free memory") if free else None


def batch_bytes_lower_bound(batch_size: int, tokens_per_example: int, hidden: int, layers: int) -> int:
    """What one micro-batch needs at least: per token its ids (int64, with labels) and one
    float32 activation vector per layer, kept for the backward pass (gradient checkpointing
    keeps one per layer too). Real use is several times this."""
    tokens = batch_size * tokens_per_example
    return tokens * (16 + 4 * hidden * (layers + 1))


def check_batch_memory(plan, memory: tuple[int, str] | None = None) -> None:
    shape = model_shape(plan.config)
    memory = memory or machine_memory(str(plan.config.get("device", "auto")))
    if shape is None or memory is None:
        return
    hidden, layers = shape
    for stage in plan.stages:
        train = stage.train
        length = int(train.get("block_size" if stage.kind == "text" else "max_length") or 0)
        needs = batch_bytes_lower_bound(int(train["batch_size"]), length, hidden, layers)  # one micro-step
        if needs > memory[0]:
            raise UserError(f"stage '{stage.name}': train.batch_size={train['batch_size']} x {length} tokens needs "
                            f"at least {needs / 2**30:,.1f} GiB for its activations, more than the "
                            f"{memory[0] / 2**30:,.1f} GiB of {memory[1]}; lower train.batch_size (train.grad_accum "
                            f"keeps the examples per optimizer step)")
