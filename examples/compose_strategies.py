"""Compose strategies from Python: active forgetting + experience replay on the tiny default.

    .venv/bin/python examples/compose_strategies.py

The same run as ``adaptlang run strategy=af+replay``, from Python, shrunk to a few training
steps on a few lines per language so that it finishes in about a minute on a CPU (drop
QUICK for the real thing). Afterwards it reads the run's metrics.json: each stage's
training loss and held-out perplexity per language class, and the forgetting table.
Runs go to $ADAPTLANG_EXAMPLE_OUT (default: runs/examples).
"""
import json
import os

import adaptlang

OUT = os.environ.get("ADAPTLANG_EXAMPLE_OUT", "runs/examples")
# A few steps, a narrower model, few lines per language, few evaluation sentences.
QUICK = ["train.max_steps=3", "train.batch_size=4", "train.block_size=32", "train.max_length=64",
         "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
         "model.tokenizer.vocab_size=1500", "model.tokenizer.character_coverage=0.99",
         "data.max_lines_per_language=60", "eval.max_sentences=3"]

cfg = adaptlang.load_config([
    "strategy=af+replay",           # composed in set-up order; each gets strategy.<name>.* options
    "strategy.af.every=2",          # re-initialize the embeddings every 2 steps (of the pretrain stage)
    "strategy.replay.size=16",      # 16 past English instructions, interleaved with the new ones
    "name=compose-af-replay", f"output_dir={OUT}", "overwrite=true", *QUICK,
])
print("stages:", [s.name for s in cfg.experiment.stages], "| strategies:", list(cfg.strategy))

run_dir = adaptlang.run(cfg)         # plans (every check before anything is written), then runs

metrics = json.loads((run_dir / "metrics.json").read_text())
assert metrics["status"] == "complete"
for name, stage in metrics["stages"].items():
    ppl = {cls: round(v["ppl_token"], 1) for cls, v in stage["eval"]["perplexity"]["classes"].items()}
    print(f"{name:9s} strategies={stage['strategies']} loss {stage['train']['first_loss']:.3f} -> "
          f"{stage['train']['final_loss']:.3f}; ppl_token per class {ppl}")
# Forgetting: each later stage against the first, per class (relative change; for
# perplexity, lower is better, so a positive figure on the pretraining class is forgetting).
relative = metrics["forgetting"]["relative"]
for name, benchmarks in relative.items():
    change = {cls: f"{v['ppl_token']:+.2%}" for cls, v in benchmarks["perplexity"].items()}
    print(f"{name:9s} ppl_token vs {metrics['forgetting']['baseline']}: {change}")
print("run directory:", run_dir)
