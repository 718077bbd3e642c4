"""Plug in a new benchmark as data: a NusaX-style zero-shot classification task from YAML.

    .venv/bin/python examples/task_yaml.py

examples/tasks/topic.yaml describes the task (labels, label words, prompts) and points at
its CSVs (examples/tasks/topic/<language>/test.csv); no code is written. The run lists the
file in eval.classify.task_files and the task's name in eval.benchmarks, trains the tiny
default for a few steps, and prints the task's accuracy per language after each stage.
Each language is marked pretrained / seen / unseen from the language set and the stages
(here: en pretrained, fr and nl seen in adapt, de unseen). The same on the command line:

    adaptlang run eval.classify.task_files=[examples/tasks/topic.yaml] eval.benchmarks=[perplexity,topic]

Runs go to $ADAPTLANG_EXAMPLE_OUT (default: runs/examples).
"""
import json
import os
from pathlib import Path

import adaptlang

OUT = os.environ.get("ADAPTLANG_EXAMPLE_OUT", "runs/examples")
TASK = Path(__file__).resolve().parent / "tasks" / "topic.yaml"
# A few steps, a narrower model, few lines per language: about a minute on a CPU.
QUICK = ["train.max_steps=3", "train.batch_size=4", "train.block_size=32", "train.max_length=64",
         "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
         "model.tokenizer.vocab_size=1500", "model.tokenizer.character_coverage=0.99",
         "data.max_lines_per_language=60"]

cfg = adaptlang.load_config([
    "strategy=af+replay", "strategy.af.every=2", "strategy.replay.size=16",
    f"eval.classify.task_files=[{TASK}]",   # files, or folders of task YAMLs
    "eval.benchmarks=[topic]",               # the task's `name:`; add perplexity etc. as usual
    "eval.classify.max_examples=14",         # first rows of the split per language (null = all)
    "name=task-topic", f"output_dir={OUT}", "overwrite=true", *QUICK,
])
run_dir = adaptlang.run(cfg)

metrics = json.loads((run_dir / "metrics.json").read_text())
for name, stage in metrics["stages"].items():
    topic = stage["eval"]["topic"]
    per_language = {code: f"{v['class']} {v['accuracy']:.2f}" for code, v in topic["languages"].items()}
    print(f"{name:9s} accuracy per language {per_language}; overall {topic['classes']['overall']['accuracy']:.2f}")
print("prompts:", topic["task"]["prompts"], "| status:", topic["task"]["status_rule"])
print("run directory:", run_dir)
