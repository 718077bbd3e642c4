"""Initialisations of the new vocabulary rows, side by side (issue #18 item 2).

The tiny default model is pretrained once (the plan's pretrain stage). Then, for each
``init`` (random, mean, subword-mean, focus) and each seed, a copy of it goes through the
adapt stage with ``vocab`` (the paper's recipe: new rows + LM head trained, body frozen) for
the same number of steps, and the adapting languages' held-out bits per character are
measured (FLORES-200 devtest, the perplexity benchmark; per character, so comparable across
tokenizers). The seed changes the data order and every seeded draw of the stage (random rows,
FOCUS's SVD and fallback rows); the merged vocabulary is the same for all (it has no seed).

    PYTHONPATH=. python bench/vocab_init_bench.py [--steps 60] [--seeds 0,1,2] [key=value ...]

Prints one line per run, then a table: the mean over seeds of the first training loss (right
after the init: how good a start each init gives) and the mean, min and max of the adapting
class's bits per character after ``--steps`` steps.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from accelerate import Accelerator  # noqa: E402

from _emit import emit  # noqa: E402
from adaptlang import load_config  # noqa: E402
from adaptlang.benchmarks.perplexity import figures, score_groups  # noqa: E402
from adaptlang.pipeline import initial_model  # noqa: E402
from adaptlang.plan import make_plan  # noqa: E402
from adaptlang.sources import heldout_texts  # noqa: E402
from adaptlang.stage_runner import run_stage  # noqa: E402

INITS = ("random", "mean", "subword-mean", "focus")


def adapting_bpc(model, tokenizer, plan) -> float:
    """The perplexity benchmark's adapting-class figure (unweighted mean over the languages),
    scoring only the adapting languages."""
    groups = {}
    for code in plan.languages.resolve(["adapting"]):
        texts, _ = heldout_texts(code, plan.languages, plan.config, plan.config.eval.get("max_sentences"))
        if texts is not None:
            groups[code] = texts
    scores = score_groups(model, tokenizer, groups, int(plan.config.eval.batch_size))
    return statistics.mean(figures(s)["bits_per_char"] for s in scores.values())


def stage(plan, name, steps, model, tokenizer, seed, composed=None):
    planned = dataclasses.replace(plan.stage(name), steps=steps)
    strategies = (composed or plan.composed).active(name)
    return run_stage(planned, strategies, model, tokenizer, seed=seed, accelerator=Accelerator(cpu=True),
                     languages=plan.languages, config=plan.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="adapt-stage steps after the expansion")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="default: the plan's")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_config(["strategy=vocab", "eval.benchmarks=[perplexity]", *args.overrides])
    plan = make_plan(cfg)
    started = time.perf_counter()
    model, tokenizer = initial_model(cfg, plan.languages)
    pre = stage(plan, "pretrain", args.pretrain_steps or plan.stage("pretrain").steps, model, tokenizer, plan.seed)
    print(f"pretrained: {pre.train['steps']} steps in {time.perf_counter() - started:.0f}s, "
          f"adapting bpc {adapting_bpc(pre.model, tokenizer, plan):.3f}")
    results: dict[str, list[tuple[float, float]]] = {}
    for init in INITS:
        composed = make_plan(load_config(["strategy=vocab", f"strategy.vocab.init={init}", *args.overrides])).composed
        for seed in seeds:
            t0 = time.perf_counter()
            res = stage(plan, "adapt", args.steps, copy.deepcopy(pre.model), tokenizer, seed, composed)
            after = adapting_bpc(res.model, res.tokenizer, plan)
            notes = res.notes["vocab"]
            results.setdefault(init, []).append((res.train["first_loss"], after))
            print(f"{init:12s} seed {seed}: added {notes['added_tokens']}, loss {res.train['first_loss']:.3f} -> "
                  f"{res.train['final_loss']:.3f}, adapting bpc after {args.steps} steps {after:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
            emit("vocab_init", init=init, seed=seed, steps=args.steps, first_loss=res.train["first_loss"],
                 final_loss=res.train["final_loss"], adapting_bpc=after)
    print(f"\n| init | first loss (mean) | adapting bits/char after {args.steps} steps, mean of {len(seeds)} seeds "
          "| min | max |")
    print("|---|---:|---:|---:|---:|")
    for init, pairs in results.items():
        first, bpc = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"| {init} | {statistics.mean(first):.3f} | {statistics.mean(bpc):.4f} | {min(bpc):.4f} | {max(bpc):.4f} |")


if __name__ == "__main__":
    main()
