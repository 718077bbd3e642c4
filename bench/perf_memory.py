"""Peak memory: of preparing a stage's training data at 1x and 10x the default corpus, and of
training steps per token against the packed row width (512 / 2048 / 4096).

Each scale runs in a fresh child process: read the text of the 12 pretraining languages
(1x: the vendored NTREX-128 text, 1997 lines per language; 10x: the same text repeated ten
times, written to local files and pointed at with data.train_files), tokenize it into LM
blocks, and draw 50 batches. Prints each child's peak RSS (ru_maxrss) and the ratio.

Row width: in a fresh child per width, the tiny default model (positions up to 4096) trains
3 steps of the loop (adaptlang.train.train_stage, packing on) on random examples of 64-448
tokens packed into rows of the width, with the same 8192 tokens per batch (16 x 512,
4 x 2048, 2 x 4096). Prints the peak RSS above the child's RSS before training, per token
of the batch.

    python bench/perf_memory.py [--widths 512,2048,4096] [--skip-corpus]
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _emit import emit

CHILD = r'''
import json, resource, sys, time
from adaptlang import load_config
from adaptlang.batching import make_batch
from adaptlang.data import ExampleStream, lm_examples
from adaptlang.languages import LanguageSet
from adaptlang.models import load_pretrained
from adaptlang.sources import text_for
from transformers import AutoTokenizer

overrides = json.loads(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
cfg = load_config(overrides)
langs = LanguageSet.from_config(cfg.languages)
start = time.perf_counter()
import datasets, tempfile
texts, _ = text_for(langs.resolve("pretraining"), langs, cfg)
blocks = lm_examples(datasets.concatenate_datasets(list(texts.values())), tokenizer, 128, tempfile.mkdtemp())
stream = ExampleStream(blocks, 0)
for _ in range(50):
    make_batch([next(stream) for _ in range(16)], 0, None)
print(json.dumps({"lines": sum(len(v) for v in texts.values()), "blocks": len(blocks),
                  "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


WIDTH_CHILD = r'''
import json, random, resource, sys
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf
from adaptlang import load_config
from adaptlang.data import ExampleStream
from adaptlang.models import build_model
from adaptlang.stage_runner import adhoc_stage
from adaptlang.strategy import StageContext
from adaptlang.train import train_stage
from transformers import AutoTokenizer

width, tokens = int(sys.argv[1]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
cfg = load_config([])
mcfg = OmegaConf.merge(cfg.model, {"max_position_embeddings": 4096})
model = build_model(mcfg, tokenizer, 0)
rng = random.Random(0)
examples = []
for _ in range(400):
    n = rng.randint(64, 448)
    ids = [rng.randrange(4, len(tokenizer)) for _ in range(n)]
    examples.append({"input_ids": ids, "labels": ids})
stage = adhoc_stage("mem", 3, {"batch_size": 1, "max_length": width, "packing": True, "log_every": 1000})
train = OmegaConf.create(stage.train)
# packed rows of `width` hold ~width/256 examples: draw enough examples for tokens/width rows
train.batch_size = max(1, round(tokens / 256))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ctx = StageContext(name="mem", index=0, seed=0, train=train, config=cfg)
_, stats = train_stage(model, tokenizer, ExampleStream(examples, 0), [], train, 3, Accelerator(cpu=True), ctx)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"width": width, "before_mb": before, "peak_mb": peak, "tokens_per_step": stats["tokens"] / 3}))
'''


def widths(tmp: str, tokenizer, values: list[int], tokens: int = 8192) -> list[dict]:
    tokenizer.save_pretrained(f"{tmp}/tok-w")
    rows = []
    for width in values:
        out = subprocess.run([sys.executable, "-c", WIDTH_CHILD, str(width), f"{tmp}/tok-w", str(tokens)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\n{'row width':>9s} {'tokens/step':>11s} {'RSS before MB':>13s} {'peak MB':>8s} {'KB per token':>12s}")
    for r in rows:
        r["kb_per_token"] = (r["peak_mb"] - r["before_mb"]) * 1024 / r["tokens_per_step"]
        print(f"{r['width']:9d} {r['tokens_per_step']:11.0f} {r['before_mb']:13.0f} {r['peak_mb']:8.0f} "
              f"{r['kb_per_token']:12.1f}")
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="512,2048,4096")
    parser.add_argument("--skip-corpus", action="store_true")
    args = parser.parse_args()
    from adaptlang import load_config
    from adaptlang.languages import CORPORA, LanguageSet
    from adaptlang.pipeline import initial_model

    cfg = load_config([])
    langs = LanguageSet.from_config(cfg.languages)
    with tempfile.TemporaryDirectory() as tmp:
        _, tokenizer = initial_model(cfg, langs)
        tokenizer.save_pretrained(f"{tmp}/tok")
        by_width = widths(tmp, tokenizer, [int(w) for w in args.widths.split(",")])
        emit("memory_width", kb_per_token={r["width"]: r["kb_per_token"] for r in by_width})
        if args.skip_corpus:
            return
        rows = []
        for scale in (1, 10):
            overrides = ["data.max_lines_per_language=null"]
            if scale > 1:
                for code in langs.resolve("pretraining"):
                    src = CORPORA / "ntrex128" / f"{langs.table[code].ntrex}.txt.gz"
                    lines = gzip.open(src, "rt", encoding="utf-8").read()
                    path = Path(tmp) / f"{code}.txt"
                    path.write_text(lines * scale, encoding="utf-8")
                    overrides.append(f"data.train_files.{code}={path}")
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides), f"{tmp}/tok"],
                                 capture_output=True, text=True, check=True)
            rows.append((scale, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"{'corpus':>7s} {'lines':>8s} {'blocks':>8s} {'seconds':>8s} {'peak RSS MB':>12s}")
    for scale, r in rows:
        print(f"{scale:>6d}x {r['lines']:8d} {r['blocks']:8d} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f}")
    print(f"peak RSS 10x / 1x = {rows[1][1]['peak_rss_mb'] / rows[0][1]['peak_rss_mb']:.2f}")
    emit("memory", rss_1x_mb=rows[0][1]["peak_rss_mb"], rss_10x_mb=rows[1][1]["peak_rss_mb"],
         ratio=rows[1][1]["peak_rss_mb"] / rows[0][1]["peak_rss_mb"], lines_1x=rows[0][1]["lines"],
         lines_10x=rows[1][1]["lines"])


if __name__ == "__main__":
    main()
