"""A new set of languages as YAML: pretrain on English + German, adapt to Scandinavian languages.

    .venv/bin/python examples/language_set.py

examples/languages/nordic.yaml defines the classes (pretraining: en de; adapting: sv da no;
other: nl). The run trains the tiny default on them for a few steps with af+replay and prints
held-out perplexity per class after each stage: the adapting class is what the run teaches,
the pretraining class what it may forget. The same on the command line:

    adaptlang run languages=examples/languages/nordic.yaml

Runs go to $ADAPTLANG_EXAMPLE_OUT (default: runs/examples).
"""
import json
import os
from pathlib import Path

import adaptlang

OUT = os.environ.get("ADAPTLANG_EXAMPLE_OUT", "runs/examples")
LANGUAGES = Path(__file__).resolve().parent / "languages" / "nordic.yaml"
# A few steps, a narrower model, few lines per language, few evaluation sentences.
QUICK = ["train.max_steps=3", "train.batch_size=4", "train.block_size=32", "train.max_length=64",
         "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
         "model.tokenizer.vocab_size=1000", "model.tokenizer.character_coverage=0.99",
         "data.max_lines_per_language=60", "eval.max_sentences=3"]

cfg = adaptlang.load_config([
    f"languages={LANGUAGES}",                # a path, or a name from adaptlang/configs/languages/
    "strategy=af+replay", "strategy.af.every=2", "strategy.replay.size=16",
    "name=nordic", f"output_dir={OUT}", "overwrite=true", *QUICK,
])
print("classes:", {cls: list(codes) for cls, codes in cfg.languages.classes.items()})
run_dir = adaptlang.run(cfg)

metrics = json.loads((run_dir / "metrics.json").read_text())
for name, stage in metrics["stages"].items():
    classes = stage["eval"]["perplexity"]["classes"]
    print(f"{name:9s} ppl_token per class", {cls: round(v["ppl_token"], 1) for cls, v in classes.items()})
print("run directory:", run_dir)
