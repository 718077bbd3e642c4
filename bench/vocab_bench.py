"""Benchmark of the ``vocab`` strategy at the default sizes (tiny model, 8000-piece base
tokenizer, 4000-piece new-language model, 1000 training lines per language).

Prints: the time of the merge (new sentencepiece model + merge + protection check + resize
+ fertility), the adaptation throughput (tokens/s of the adapt stage's training loop with
vocab: new rows + LM head trainable, body frozen; and, for reference, plain full-model
training on the same data), and the fertility table.

    PYTHONPATH=. python bench/vocab_bench.py [--steps 30] [key=value overrides ...]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from _emit import emit  # noqa: E402
from adaptlang import load_config  # noqa: E402
from adaptlang.pipeline import initial_model  # noqa: E402
from adaptlang.plan import make_plan  # noqa: E402
from adaptlang.stage_runner import run_stage  # noqa: E402


def adapt_throughput(model, tokenizer, plan, steps: int) -> dict:
    """The adapt stage of the plan through the stage runner, capped at ``steps``."""
    stage = dataclasses.replace(plan.stage("adapt"), steps=steps)
    result = run_stage(stage, plan.composed.active("adapt"), model, tokenizer, seed=plan.seed,
                       accelerator=Accelerator(cpu=True), languages=plan.languages, config=plan.config)
    return {"setup_seconds": result.setup_seconds, "trainable": result.parameters["trainable"],
            "stats": result.train, "notes": result.notes, "vocab": len(result.tokenizer)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="adapt-stage optimizer steps to time")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(["strategy=vocab", *args.overrides])
    plan = make_plan(cfg)
    languages = plan.languages
    print(f"torch threads: {torch.get_num_threads()}")
    started = time.perf_counter()
    model, tokenizer = initial_model(cfg, languages)
    print(f"base tokenizer + tiny model: {len(tokenizer)} pieces, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {time.perf_counter() - started:.1f}s")
    base = copy.deepcopy(model)

    res = adapt_throughput(model, tokenizer, plan, args.steps)
    notes = res["notes"]["vocab"]
    print(f"\nmerge (strategy setup: new sentencepiece model, merge, protection, resize, init, fertility): "
          f"{res['setup_seconds']:.1f}s (merge alone {notes['merge_seconds']:.1f}s)")
    print(f"  new model pieces {notes['new_model_pieces']}, candidates {notes['candidates']}, added "
          f"{notes['added_tokens']}, dropped to keep old languages exact {notes['dropped_for_old_languages']}, "
          f"rounds {notes['rounds']}; vocabulary {notes['vocab_size_before']} -> {notes['vocab_size_after']}")
    emit("vocab", base_pieces=notes["vocab_size_before"], new_model_pieces=notes["new_model_pieces"],
         added=notes["added_tokens"], merge_seconds=notes["merge_seconds"], setup_seconds=res["setup_seconds"])
    s = res["stats"]
    print(f"adapt with vocab ({res['trainable']:,} trainable): {s['steps']} steps, {s['tokens']:,} tokens in "
          f"{s['seconds']:.1f}s = {s['tokens_per_second']:,.0f} tokens/s ({s['seconds'] / s['steps']:.3f} s/step), "
          f"loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}")

    plain = [o for o in args.overrides if not o.startswith("strategy.")]  # the vocab options do not apply
    ref = adapt_throughput(base, tokenizer, make_plan(load_config(["strategy=none", *plain])), args.steps)
    r = ref["stats"]
    print(f"adapt without vocab (full model, {ref['trainable']:,} trainable): {r['tokens']:,} tokens in "
          f"{r['seconds']:.1f}s = {r['tokens_per_second']:,.0f} tokens/s")

    print("\n| language | class | tokens/word before | after | tokens/char before | after |")
    print("|---|---|---:|---:|---:|---:|")
    for code, f in notes["fertility"].items():
        b, a = f["before"], f["after"]
        print(f"| {code} | {f['class']} | {b['tokens_per_word']:.2f} | {a['tokens_per_word']:.2f} | "
              f"{b['tokens_per_char']:.3f} | {a['tokens_per_char']:.3f} |")


if __name__ == "__main__":
    main()
