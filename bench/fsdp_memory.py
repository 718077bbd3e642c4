"""Bytes of parameters + AdamW state per process: one process unsharded against ``train.fsdp``
on N CPU processes (gloo), for the same model.

Each process builds the model (Mistral, ``--hidden``/``--layers``, the tiny tokenizer's
vocabulary size ``--vocab``), prepares it with the loop's optimizer (adaptlang.train.
build_optimizer: through accelerate, sharded by FSDP2 when N > 1), trains one step so that
AdamW holds its two moments, and counts the bytes this process holds: its pieces of the
parameters (``to_local`` of a DTensor) and of every optimizer state tensor. Prints one line
per process and the ratio of rank 0's bytes to the unsharded process's.

    python bench/fsdp_memory.py [--processes 2] [--hidden 256] [--layers 4] [--vocab 8000]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _emit import emit

ROOT = Path(__file__).resolve().parents[1]


def held_bytes(model, optimizer) -> dict:
    from adaptlang.sharding import local

    params = sum(local(p).numel() * p.element_size() for p in model.parameters())
    state = sum(local(t).numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if hasattr(t, "element_size") and t.dim() > 0)
    return {"parameter_bytes": params, "optimizer_bytes": state, "total_bytes": params + state}


def child(args) -> None:
    import torch
    from accelerate import Accelerator
    from omegaconf import OmegaConf

    from adaptlang.sharding import fsdp_accelerator, fsdp_plugin, sharded
    from adaptlang.train import build_optimizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    fsdp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    plugin = fsdp_plugin() if fsdp else None
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    if plugin is not None:
        fsdp_accelerator(accelerator, plugin)
    from transformers import MistralConfig, MistralForCausalLM
    model = MistralForCausalLM(MistralConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                                             intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                                             num_attention_heads=8, num_key_value_heads=4,
                                             max_position_embeddings=256, tie_word_embeddings=True))
    tcfg = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.95], "eps": 1e-8,
                             "warmup_ratio": 0.0, "schedule": "constant"})
    model, optimizer, _ = build_optimizer(model, tcfg, 1, accelerator)
    ids = torch.randint(0, args.vocab, (2, 64))
    accelerator.backward(model(input_ids=ids, labels=ids).loss)
    optimizer.step()
    figures = {"rank": accelerator.process_index, "world": accelerator.num_processes,
               "sharded": sharded(accelerator), **held_bytes(accelerator.unwrap_model(model), optimizer)}
    Path(args.out, f"rank{accelerator.process_index}-of-{accelerator.num_processes}.json").write_text(json.dumps(figures))


def launch(processes: int, args, out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
           str(port), __file__, "--child", "--out", out, "--hidden", str(args.hidden), "--layers", str(args.layers),
           "--vocab", str(args.vocab)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as out:
        launch(1, args, out)
        launch(args.processes, args, out)
        rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    one = next(r for r in rows if r["world"] == 1)
    for r in sorted(rows, key=lambda r: (r["world"], r["rank"])):
        print(f"world {r['world']} rank {r['rank']} sharded={r['sharded']}: parameters {r['parameter_bytes']:,} B, "
              f"AdamW state {r['optimizer_bytes']:,} B, total {r['total_bytes']:,} B "
              f"({r['total_bytes'] / one['total_bytes']:.3f} of one process)")
    ranks = [r for r in rows if r["world"] == args.processes]
    worst = max(r["total_bytes"] for r in ranks) / one["total_bytes"]
    emit("fsdp_memory", processes=args.processes, one_process_bytes=one["total_bytes"],
         largest_rank_fraction=round(worst, 4))


if __name__ == "__main__":
    main()
