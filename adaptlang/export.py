"""Export (``adaptlang export SOURCE --out DIR``): a plain transformers checkpoint, checked.

SOURCE is one of

* a **run folder** (``runs/<name>``): the model and tokenizer of its last stage (or
  ``--stage S``, a completed one). Stage models are merged already (``vocab`` and ``lora``
  merge their peft layers at the stage end), so the folder is copied as it is. A run that is
  not complete (killed mid-stage: its latest weights are a checkpoint with live peft layers)
  is refused without ``--stage``: resume it first, or export one of its completed stages;
* a **peft adapter folder** (``adapter_config.json`` + ``adapter_model.safetensors``, as
  ``PeftModel.save_pretrained`` writes it: LoRA, (IA)3, TrainableTokens, LoRA with
  ``trainable_token_indices`` / ``modules_to_save``), needs ``--merge-adapters``. The base
  model is read from ``base_model_name_or_path`` (or ``--base PATH``), a local folder only:
  export never downloads. Its embeddings are resized to the number of rows the adapter's
  own tensors have (read from the safetensors header, not guessed from the tokenizer), the
  adapter is loaded and merged (``merge_and_unload``) and the result saved plain, with the
  adapter folder's tokenizer (else the base's). This is the case where merging a
  vocabulary-expanded adapter elsewhere fails with a size mismatch. An adapter that grew
  the vocabulary but does not hold a grown matrix (e.g. a TrainableTokens adapter on an
  untied model: peft saves the input embedding but not the resized LM head) cannot be
  reproduced from the folder and is refused.

The adapter is merged in float32 and the checkpoint is saved in float32. After writing, the
folder is reloaded with ``AutoModelForCausalLM.from_pretrained`` (no missing, unexpected or
mis-sized keys allowed) and its logits are compared with the unmerged model's on a few
seeded token sequences that include the new (grown) ids; ``DIR/export.json`` records the
largest absolute difference, and an export above ``TOLERANCE`` (1e-4) times the largest
logit magnitude (at least 1) is refused: relative, so that a large model's logits of tens do
not fail on the merge's own float32 rounding.

Everything is written into ``DIR.tmp-<pid>`` beside ``DIR`` and renamed at the end, so a
``DIR`` that exists is complete; an existing non-empty ``DIR`` is refused, never replaced.
Mistakes are ``UserError`` (one line on the command line, exit code 2).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from .errors import UserError
from .models import module_name
from .rundir import RunDir, read_status, write_json

log = logging.getLogger("adaptlang")
TOLERANCE = 1e-4
PROBES, PROBE_LENGTH, PROBE_SEED = 4, 16, 0
FULL_MATRIX_SUFFIXES = ("weight", "base_layer.weight", "token_adapter.base_layer.weight",
                        "modules_to_save.weight", "original_module.weight")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def export(source: str, out: str | None, stage: str | None = None, merge_adapters: bool = False,
           base: str | None = None) -> dict:
    """Write the plain checkpoint of ``source`` to ``out``; returns the record in ``out/export.json``."""
    src = Path(source)
    if not src.exists():
        raise UserError(f"export: '{source}' does not exist")
    if not out:
        raise UserError("export needs --out DIR: adaptlang export SOURCE --out DIR")
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"export: --out {dest} already exists and is not empty; choose a new folder")
    if (src / "adapter_config.json").is_file():
        if stage is not None:
            raise UserError(f"export: --stage applies to a run folder; '{source}' is a peft adapter folder")
        if not merge_adapters:
            raise UserError(f"export: '{source}' is a peft adapter folder; pass --merge-adapters to merge it into "
                            f"its base model (export writes plain checkpoints only)")
        build = _from_adapter(src, base)
    elif (src / "config.yaml").is_file():
        if base is not None:
            raise UserError(f"export: --base applies to a peft adapter folder; '{source}' is a run folder")
        build = _from_run(src, stage, merge_adapters)
    elif (src / "config.json").is_file():
        raise UserError(f"export: '{source}' is a transformers model folder already; export takes a run "
                        f"folder (runs/NAME) or a peft adapter folder (adapter_config.json)")
    else:
        raise UserError(f"export: '{source}' is neither a run folder (config.yaml) nor a peft "
                        f"adapter folder (adapter_config.json)")
    from transformers.utils import logging as hf_logging

    # everything is written inside --out: a hidden folder there, whose files move up when
    # complete, export.json last (its presence says the export is whole)
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".export-{os.getpid()}.tmp"
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # errors stay one line
    try:
        record = build(tmp)
        write_json(tmp / "export.json", record)
        for child in sorted(tmp.iterdir(), key=lambda p: p.name == "export.json"):
            os.replace(child, dest / child.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(dest if made else tmp, ignore_errors=True)
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    log.info("export: %s -> %s (max |logit diff| %.3g)", source, dest, record["max_abs_logit_diff"])
    return record


# --- a run folder ------------------------------------------------------------------------

def _planned_stages(run: Path) -> list[str]:
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        return [str(s["name"]) for s in cfg["experiment"]["stages"]]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return []


def _from_run(run: Path, stage: str | None, merge_adapters: bool):
    rundir = RunDir(run)
    planned = _planned_stages(run)
    completed = rundir.completed_stages()
    done = [s for s in planned if s in completed] + [s for s in completed if s not in planned]
    status = read_status(run)
    valid = ", ".join(done) or "none"
    if stage is None:
        if status != "complete":
            raise UserError(f"export: run {run} is not complete (status: {status}); run `adaptlang resume {run}` "
                            f"first, or export a completed stage with --stage (completed: {valid})")
        if not done:
            raise UserError(f"export: run {run} has no completed stage with a saved model")
        stage = done[-1]
    elif stage not in done:
        why = "has not finished" if stage in planned else "is not a stage of this run"
        hint = f"; `adaptlang resume {run}` finishes it" if stage in planned and status != "complete" else ""
        raise UserError(f"export: stage '{stage}' {why}{hint}; completed stages: {valid}")
    model_dir = rundir.stage_dir(stage) / "model"
    if merge_adapters:
        log.info("export: --merge-adapters: the stage models of a run are merged at the stage end already")
    try:
        first_vocab = int(json.loads((run / "metrics.json").read_text())["model"]["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        first_vocab = None

    def build(tmp: Path) -> dict:
        reference = _load(model_dir, f"stage '{stage}' of {run}")
        probes = _probes(_rows(reference), first_vocab)
        expected = _logits(reference, probes)
        del reference
        shutil.copytree(model_dir, tmp)
        exported, tokenizer = _reload(tmp)
        record = {"schema": "adaptlang.export/1", "source": str(run), "kind": "run", "stage": stage,
                  "merged": "at the stage end (the run's own model)",
                  "vocab_size": {"run_start": first_vocab, "exported_rows": _rows(exported),
                                 "tokenizer": len(tokenizer)}}
        return _checked(record, exported, probes, expected, first_vocab)

    return build


# --- a peft adapter folder -----------------------------------------------------------------

def _adapter_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        other = "adapter_model.bin (pickle; not read)" if (folder / "adapter_model.bin").is_file() else "no weights"
        raise UserError(f"export: '{folder}' has no adapter_model.safetensors ({other}); save it with "
                        f"safe_serialization=True")
    try:
        with safe_open(str(weights), framework="pt") as fh:
            names = fh.keys()  # the header only: no tensor is read
            return {key.removeprefix("base_model.model."): tuple(fh.get_slice(key).get_shape()) for key in names}
    except (OSError, SafetensorError) as exc:  # a truncated or corrupt file
        raise UserError(f"export: cannot read {weights}: {str(exc).splitlines()[0][:200]}") from None


def _matrix_rows(shapes: dict, module: str | None) -> int | None:
    """Rows of a full vocabulary matrix the adapter holds for ``module`` (saved embedding
    layers, modules_to_save copies, a token adapter's base layer), else None."""
    if module is None:
        return None
    rows = {shape[0] for key, shape in shapes.items() if len(shape) == 2
            and any(key == f"{module}.{suffix}" for suffix in FULL_MATRIX_SUFFIXES)}
    if len(rows) > 1:
        raise UserError(f"export: the adapter holds {module} matrices of different sizes ({sorted(rows)})")
    return rows.pop() if rows else None


def _token_indices(config: dict) -> list[int]:
    found = config.get("token_indices") or config.get("trainable_token_indices") or []
    if isinstance(found, dict):
        return [int(i) for ids in found.values() for i in ids]
    return [int(i) for i in found]


def _grown_rows(model, config: dict, shapes: dict) -> int:
    """The embedding size the adapter was trained with, from its own tensors."""
    before = _rows(model)
    inp = module_name(model, model.get_input_embeddings())
    out_module = model.get_output_embeddings()
    tied = out_module is None or out_module.weight is model.get_input_embeddings().weight
    outp = None if tied else module_name(model, out_module)
    sizes = {name: _matrix_rows(shapes, name) for name in (inp, outp) if name is not None}
    held = {name: rows for name, rows in sizes.items() if rows is not None}
    rows = max(held.values(), default=before)
    for name in sizes:
        if rows != before and held.get(name) != rows:
            short = name.rsplit(".", 1)[-1]
            raise UserError(f"export: the adapter grew the vocabulary from {before} to {rows} rows but holds no "
                            f"{name} matrix of {rows} rows: the new {name} rows it was trained with are not saved "
                            f"in it, so no merge can reproduce the trained model (save the grown {short} with the "
                            f"adapter, e.g. modules_to_save=['{short}'])")
    beyond = [i for i in _token_indices(config) if i >= rows]
    if beyond:
        raise UserError(f"export: the adapter trains token ids up to {max(beyond)} but holds no embedding "
                        f"matrix beyond the base model's {rows} rows; save it with save_embedding_layers=True")
    return rows


def _from_adapter(folder: Path, base: str | None):
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"export: cannot read {folder / 'adapter_config.json'}: {exc}") from None
    base_path = base or config.get("base_model_name_or_path")
    if not base_path:
        raise UserError(f"export: {folder / 'adapter_config.json'} names no base model; pass --base PATH")
    if not (Path(base_path) / "config.json").is_file():
        if base:
            raise UserError(f"export: --base '{base}' is not a local transformers model folder (no config.json)")
        raise UserError(f"export: the adapter's base model '{base_path}' is not a local model folder and export "
                        f"never downloads; pass --base PATH (a local copy of it)")
    shapes = _adapter_shapes(folder)

    def build(tmp: Path) -> dict:
        from peft import PeftModel
        from transformers import AutoTokenizer

        model = _load(Path(base_path), "the base model")
        before = _rows(model)
        rows = _grown_rows(model, config, shapes)
        if rows != before:
            model.resize_token_embeddings(rows, mean_resizing=False)  # the new rows come from the adapter
        has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder if has_tokenizer else base_path)
        except (OSError, ValueError) as exc:
            raise UserError(f"export: cannot read the tokenizer of {folder if has_tokenizer else base_path}: "
                            f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
        if len(tokenizer) > rows:
            raise UserError(f"export: the tokenizer has {len(tokenizer)} tokens but the adapter's embeddings have "
                            f"only {rows} rows: tokenizer and adapter do not match")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = PeftModel.from_pretrained(model, str(folder))
        except (ValueError, RuntimeError, KeyError) as exc:  # e.g. a size mismatch
            raise UserError(f"export: cannot load adapter {folder} onto {base_path}: "
                            f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
        missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
        if missing:
            raise UserError(f"export: adapter {folder} does not fit {base_path}: {missing[0][:300]}")
        model.eval()
        probes = _probes(rows, before)
        expected = _logits(model, probes)
        merged = model.merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model, merged
        exported, saved_tokenizer = _reload(tmp)
        record = {"schema": "adaptlang.export/1", "source": str(folder), "kind": "peft-adapter",
                  "stage": None, "peft_type": config.get("peft_type"), "base_model": str(base_path),
                  "merged": "merge_and_unload, float32",
                  "vocab_size": {"base_rows": before, "exported_rows": _rows(exported),
                                 "tokenizer": len(saved_tokenizer)}}
        return _checked(record, exported, probes, expected, before)

    return build


# --- loading, probing, checking ------------------------------------------------------------

def _rows(model) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def _load(path: Path, what: str):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"export: cannot load {what} ({path}) as a causal LM: "
                        f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None
    return model.eval()


def _reload(folder: Path):
    """The written folder, read back as any user would; it must load without loose keys."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                       output_loading_info=True)
    loose = {k: sorted(v)[:3] for k, v in info.items() if k != "error_msgs" and v}
    if loose or info.get("error_msgs"):
        raise UserError(f"export: the written checkpoint does not load cleanly: {loose or info['error_msgs'][:1]}")
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def _probes(rows: int, old_rows: int | None) -> torch.Tensor:
    """Seeded token sequences: old ids, old and new mixed, new only (when the vocabulary grew)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    old = min(old_rows or rows, rows)
    seqs = [torch.randint(0, old, (PROBE_LENGTH,), generator=generator),
            torch.randint(0, rows, (PROBE_LENGTH,), generator=generator)]
    if rows > old:
        seqs += [torch.randint(old, rows, (PROBE_LENGTH,), generator=generator),
                 torch.arange(old, rows)[:PROBE_LENGTH].repeat(PROBE_LENGTH)[:PROBE_LENGTH]]
    else:
        seqs += [torch.randint(0, rows, (PROBE_LENGTH,), generator=generator) for _ in range(PROBES - 2)]
    return torch.stack(seqs)


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


def _checked(record: dict, exported, probes: torch.Tensor, expected: torch.Tensor, old_rows: int | None) -> dict:
    diff = float((_logits(exported, probes) - expected).abs().max())
    allowed = TOLERANCE * max(1.0, float(expected.abs().max()))
    record.update({"max_abs_logit_diff": diff, "tolerance": allowed,
                   "probe": {"sequences": int(probes.shape[0]), "length": PROBE_LENGTH, "seed": PROBE_SEED,
                             "new_ids": int((probes >= (old_rows or _rows(exported))).sum())}})
    if not diff <= allowed:  # NaN fails too
        raise UserError(f"export: the exported model's logits differ from the unmerged model's by {diff:.3g} "
                        f"(> {allowed:.3g}: {TOLERANCE:g} x the largest logit); nothing was written")
    return record
