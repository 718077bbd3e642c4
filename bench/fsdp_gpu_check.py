"""The first GPU check of ``train.fsdp`` (not yet run: no GPU machine so far; docs/distributed.md).

Runs one short pipeline (tiny model, af + replay, 4 steps a stage, fp32) twice: unsharded on
one GPU (``torchrun --nproc_per_node 1``), then sharded on every visible GPU
(``torchrun --nproc_per_node N ... train.fsdp=true``), and compares the two runs' per-stage
first and final losses (metrics.json) and every stage model's parameters. Prints one line per
stage and exits non-zero when a difference passes ``--tolerance``. On GPUs the reductions
run in another order than on one GPU, so agreement is within float rounding (1e-4 by
default), not bit for bit. A second check goes through accelerate's own launcher with an
FSDP2 config file (``--accelerate``).

    python bench/fsdp_gpu_check.py [--gpus N] [--tolerance 1e-4] [--accelerate] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train.max_steps=4", "model.tokenizer.vocab_size=1500", "model.tokenizer.character_coverage=0.99",
            "data.max_lines_per_language=60", "eval.max_sentences=3", "train.batch_size=8", "train.block_size=32",
            "train.max_length=64", "model.hidden_size=64", "model.intermediate_size=128",
            "model.num_hidden_layers=2", "mixed_precision=no", "strategy=af+replay", "strategy.af.every=2",
            "strategy.replay.size=8", "train.checkpoint_every=0", "device=auto"]
FSDP2_YAML = """distributed_type: FSDP
num_processes: {gpus}
mixed_precision: 'no'
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
"""


def launch(launcher: list[str], out: Path, name: str, *extra: str) -> Path:
    cmd = [sys.executable, "-m", *launcher, "-m", "adaptlang.cli", "run", *SETTINGS, *extra,
           f"output_dir={out}", f"name={name}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, env=env, check=True)
    return out / name


def compare(one: Path, sharded: Path, tolerance: float) -> bool:
    from safetensors.torch import load_file

    ok = True
    a, b = (json.loads((run / "metrics.json").read_text())["stages"] for run in (one, sharded))
    for stage in a:
        if "train" not in a[stage]:
            continue
        losses = [abs(a[stage]["train"][k] - b[stage]["train"][k]) for k in ("first_loss", "final_loss")]
        wa = load_file(str(one / "stages" / stage / "model" / "model.safetensors"))
        wb = load_file(str(sharded / "stages" / stage / "model" / "model.safetensors"))
        same_keys = wa.keys() == wb.keys()
        worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) if same_keys else float("inf")
        good = same_keys and max(losses) <= tolerance and worst <= tolerance
        ok &= good
        print(f"stage {stage}: loss differences {losses[0]:.2e} (first) {losses[1]:.2e} (final), "
              f"largest parameter difference {worst:.2e} -> {'ok' if good else 'DIFFERENT'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=None, help="processes of the sharded run (default: all GPUs)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--accelerate", action="store_true", help="also launch through accelerate with FSDP2.yaml")
    parser.add_argument("--keep", help="write the runs here instead of a temporary folder")
    args = parser.parse_args()
    import torch
    gpus = args.gpus or torch.cuda.device_count()
    if gpus < 2:
        print(f"needs 2 or more GPUs; {torch.cuda.device_count()} visible")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        one = launch(["torch.distributed.run", "--nproc_per_node", "1"], out, "one")
        sharded = launch(["torch.distributed.run", "--nproc_per_node", str(gpus)], out, "sharded", "train.fsdp=true")
        ok = compare(one, sharded, args.tolerance)
        if args.accelerate:
            config = out / "fsdp2.yaml"
            config.write_text(FSDP2_YAML.format(gpus=gpus))
            through = launch(["accelerate.commands.launch", "--config_file", str(config)], out, "accelerate",
                             "train.fsdp=true")
            ok &= compare(one, through, args.tolerance)
    print("train.fsdp on GPUs:", "agrees with one GPU" if ok else "DIFFERS from one GPU")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
