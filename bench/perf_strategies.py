"""What a composed recipe costs: the default pipeline (pretrain -> adapt -> instruct, the
tiny model, the vendored data, the default steps) run with ``strategy=none`` and with
``strategy=af+replay+vocab``, alternately (ABBA), in this process.

Per stage it prints useful (non-padding) tokens/s of the training loop and the stage's
set-up seconds (strategies' model and data set-up, e.g. vocab's merge, plus the stage's
data preparation); then, for the whole run, tokens/s over training time alone and over
training plus set-up, and the ratio of the recipe to plain training.

What differs by design, and so is not "overhead": vocab trains only the new embedding rows
and the LM head in adapt (the body is frozen, so its weight gradients are never computed),
and leaves a larger vocabulary (a larger LM head) for instruct; replay interleaves past
English instructions, whose lengths differ from the new translation instructions. So it
also prints the share of the loop's time spent inside strategy hooks and drawing batches
(the framework's own cost of the strategies) and the executed FLOP/s of both runs (the work
per token differs; the rate at which the loop gets work done should not).

    PYTHONPATH=. python bench/perf_strategies.py [--strategy af+replay+vocab] [--repeats 1] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _emit import emit  # noqa: E402
from _flops import executed_flops  # noqa: E402


def stage_flops(model_dir: Path, stage: dict, frozen_body: bool) -> float:
    """Executed FLOPs of a stage (bench/_flops.py), sized from the stage's saved model config;
    the attention length is the stage's mean example length."""
    c = json.loads((model_dir / "config.json").read_text())
    d, layers, inter, vocab = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c.get("num_key_value_heads", c["num_attention_heads"])
    body = layers * (2 * d * d + 2 * d * kv + 3 * d * inter)
    return executed_flops(body, vocab * d, layers, d, stage["tokens"] / stage["examples"], stage["tokens"],
                          stage["loss_tokens"], frozen_body)


def one_run(strategy: str, out: str, label: str, overrides: list[str]) -> dict:
    import adaptlang

    cfg = adaptlang.load_config([f"strategy={strategy}", f"output_dir={out}", f"name={label}", "eval.benchmarks=[]",
                                 "train.checkpoint_every=0", "train.log_every=1000", *overrides])
    path = adaptlang.run(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    frozen = {name: "vocab" in st["strategies"] and cfg.strategy.vocab.body == "frozen"
              for name, st in metrics["stages"].items()}
    return {name: {"tokens": st["train"]["tokens"], "seconds": st["train"]["seconds"],
                   "hooks": st["train"]["strategy_seconds"], "data": st["train"]["data_seconds"],
                   "flops": stage_flops(path / st["model_dir"], st["train"], frozen[name]),
                   "setup": st["setup_seconds"], "trainable": st["parameters"]["trainable"],
                   "strategies": st["strategies"]} for name, st in metrics["stages"].items()}


def summed(runs: list[dict]) -> dict:
    """Per stage: tokens and seconds added over the repeats."""
    out: dict = {}
    for run in runs:
        for name, st in run.items():
            acc = out.setdefault(name, {"tokens": 0, "seconds": 0.0, "setup": 0.0, "hooks": 0.0, "data": 0.0, "flops": 0.0,
                                        "trainable": st["trainable"], "strategies": st["strategies"], "rates": []})
            acc["rates"].append(st["tokens"] / st["seconds"])
            for k in ("tokens", "seconds", "setup", "hooks", "data", "flops"):
                acc[k] += st[k]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="af+replay+vocab")
    parser.add_argument("--repeats", type=int, default=1, help="alternating pairs of runs (plain, recipe)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runs: dict[str, list] = {"none": [], args.strategy: []}
    with tempfile.TemporaryDirectory(prefix="adaptlang-bench-") as out:
        for r in range(args.repeats):  # ABBA order: neither side always runs first
            for strategy in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                runs[strategy].append(one_run(strategy, out, f"{strategy}-{r}", args.overrides))
    plain, recipe = summed(runs["none"]), summed(runs[args.strategy])
    print(f"\n{'stage':10s} {'strategies':18s} {'trainable':>10s} {'tokens':>9s} {'train s':>8s} {'hooks s':>8s} "
          f"{'data s':>7s} {'tokens/s':>9s} {'set-up s':>9s} {'vs none':>8s}  tokens/s of each run")
    for name in plain:
        for label, runs_ in (("none", plain), (args.strategy, recipe)):
            st = runs_[name]
            rate = st["tokens"] / st["seconds"]
            vs = rate / (plain[name]["tokens"] / plain[name]["seconds"])
            print(f"{name:10s} {'+'.join(st['strategies']) or '-':18s} {st['trainable']:10,d} {st['tokens']:9d} "
                  f"{st['seconds']:8.1f} {st['hooks']:8.2f} {st['data']:7.2f} {rate:9.0f} {st['setup']:9.1f} {vs:8.3f}  "
                  + ", ".join(f"{r:.0f}" for r in st["rates"]))

    def whole(s: dict, with_setup: bool) -> float:
        return sum(x["tokens"] for x in s.values()) / sum(x["seconds"] + (x["setup"] if with_setup else 0) for x in s.values())

    train_ratio = whole(recipe, False) / whole(plain, False)
    total_ratio = whole(recipe, True) / whole(plain, True)
    print(f"\nwhole run, training time only: {args.strategy} / none = {train_ratio:.3f}  (target >= 0.95)")
    print(f"whole run, training + set-up:  {args.strategy} / none = {total_ratio:.3f}")
    seconds = sum(x["seconds"] for x in recipe.values())
    hooks = sum(x["hooks"] for x in recipe.values()) / seconds
    extra_data = (sum(x["data"] for x in recipe.values()) - sum(x["data"] for x in plain.values())) / seconds
    print(f"share of the recipe's training time inside strategy hooks: {hooks:.2%}; extra batch-drawing time "
          f"over plain training: {extra_data:.2%}")
    flop_rate = {k: sum(x["flops"] for x in v.values()) / sum(x["seconds"] for x in v.values())
                 for k, v in (("none", plain), ("recipe", recipe))}
    flop_ratio = flop_rate["recipe"] / flop_rate["none"]
    work = (sum(x["flops"] / x["tokens"] for x in recipe.values()) / sum(x["flops"] / x["tokens"] for x in plain.values()))
    print(f"executed FLOPs per token, recipe / none (mean over stages): {work:.3f}; executed FLOP/s, recipe / none: "
          f"{flop_ratio:.3f} ({flop_rate['recipe'] / 1e9:.1f} vs {flop_rate['none'] / 1e9:.1f} GFLOP/s)")
    per_stage = {name: (recipe[name]["tokens"] / recipe[name]["seconds"]) / (plain[name]["tokens"] / plain[name]["seconds"])
                 for name in plain}
    emit("strategies", strategy=args.strategy, repeats=args.repeats, train_ratio=train_ratio, total_ratio=total_ratio,
         hook_share=hooks, extra_data_share=extra_data, flop_ratio=flop_ratio,
         per_stage=per_stage, setup_seconds={n: recipe[n]["setup"] / args.repeats for n in recipe},
         plain_setup_seconds={n: plain[n]["setup"] / args.repeats for n in plain})


if __name__ == "__main__":
    main()
