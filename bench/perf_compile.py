"""``train.compile`` against eager, side by side in one run (bench/perf_train.py's data and model).

The same tiny default model and packed instruct mixture as perf_train.py, trained by
adaptlang.train.train_stage twice per repeat: eager, and with ``compile=true``
(torch.compile of the body; on CPU the LM head's loss stays the eager fused one, elsewhere it
is compiled too; fused AdamW in both). Each variant first runs
a few warm-up steps on the same model object (for compile: the compilation itself, reported
separately), then the measured steps. Prints useful tokens/s of each, the ratio (target >= 1.2x) and the
compile time.

    python bench/perf_compile.py [--steps 30] [--warmup 3] [--repeats 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from _emit import emit  # noqa: E402
from perf_train import ctx, lm_blocks, setup, tcfg  # noqa: E402


def train(cfg, model, tokenizer, data, steps, compile_: bool) -> tuple[int, float]:
    from accelerate import Accelerator

    from adaptlang.data import ExampleStream
    from adaptlang.train import train_stage

    c = ctx(cfg)
    c.tokenizer = tokenizer
    start = time.perf_counter()
    _, stats = train_stage(model, tokenizer, ExampleStream(data, 0), [],
                           OmegaConf.merge(tcfg(cfg), {"compile": compile_}), steps, Accelerator(cpu=True), c)
    return stats["tokens"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", choices=["instruct", "blocks"], default="instruct",
                        help="the instruct mixture (rows of up to 192 tokens, prompts unlabelled) or "
                             "language-modelling blocks of train.block_size (the pretrain and adapt stages)")
    args = parser.parse_args()
    cfg, model, tokenizer, data = setup(args.batch_size)
    if args.data == "blocks":
        data = lm_blocks(data, int(cfg.train.block_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps x batch "
          f"{args.batch_size} ({args.data}) after {args.warmup} warm-up steps")
    models = {"eager": copy.deepcopy(model), "compile": copy.deepcopy(model)}
    warm = {}
    for name, m in models.items():
        warm[name] = train(cfg, m, tokenizer, data, args.warmup, name == "compile")[1]
    runs: dict[str, list] = {k: [] for k in models}
    for r in range(args.repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            runs[name].append(train(cfg, models[name], tokenizer, data, args.steps, name == "compile"))
    rate = {k: sorted(t / s for t, s in v)[len(v) // 2] for k, v in runs.items()}
    print(f"\n{'variant':10s} {'warm-up s':>9s} {'tokens/s':>9s}  all runs, tokens/s")
    for k in models:
        print(f"{k:10s} {warm[k]:9.1f} {rate[k]:9.0f}  {', '.join(f'{t / s:.0f}' for t, s in runs[k])}")
    ratio = rate["compile"] / rate["eager"]
    print(f"\ncompile / eager = {ratio:.2f}x  (target >= 1.2); compile warm-up {warm['compile']:.1f}s "
          f"vs eager {warm['eager']:.1f}s for {args.warmup} steps")
    emit("compile" if args.data == "instruct" else "compile_blocks", tokens_per_second=rate, vs_eager=ratio,
         compile_warmup_seconds=warm["compile"])


if __name__ == "__main__":
    main()
