"""The language-model data pipeline against the training loop, and its memory as the corpus grows.

For each scale (1x, 10x, ... the vendored NTREX-128 text of the 12 pretraining languages,
repeated and written as a folder of shards per language: .jsonl and .txt alternating, 2,000
lines a shard), in a fresh child process:

* read the shards as a run does (adaptlang.sources.text_for: streamed, the text written to
  Arrow in the ``datasets`` cache, here a temporary folder removed afterwards): seconds;
* prepare the pretrain stage's data as a run does (adaptlang.stage_runner.stage_stream: the
  text (now cached) tokenized into 128-token blocks with ``data.num_proc`` processes, the
  per-language streams mixed with ``data.mixture.alpha=0.3`` (``--no-mixture``: joined and
  shuffled as one stream, as the default stages), blocks in ``data.cache_dir``);
* draw 200 batches of 16 blocks and collate them (the loop's data work): tokens/s;
* prepare again with the same cache (the blocks are found, not tokenized again);
* print peak RSS (ru_maxrss) of this data work (before any training in the process), and the
  peak of its anonymous memory alone (RssAnon, sampled every 0.2 s). RSS also counts the
  pages of memory-mapped Arrow files that are mapped and were read; adaptlang gives those
  back as it goes (adaptlang.mapped_pages), so both should stay flat as the corpus grows.

Then, once, the training loop on the tiny default model (8 steps, batch 16 x 128 tokens):
its tokens/s is the rate the data pipeline has to keep up with.

    python bench/perf_data.py [--scales 1,10] [--num-proc 2]
    python bench/perf_data.py --scales 1,10,180 --num-proc 1 --train-steps 0   # up to ~1 GB of shards (docs/data.md)

The shards, the ``datasets`` cache and the block cache live under ``--tmp`` (default: the
system's temporary folder) and are deleted at the end (a 1 GB corpus needs about 3 GB there).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit

CHILD = r'''
import json, resource, sys, time
from adaptlang import load_config
from adaptlang.batching import make_batch
from adaptlang.plan import make_plan
from adaptlang.sources import text_for
from adaptlang.stage_runner import stage_stream
from adaptlang.strategy import StageContext
from omegaconf import OmegaConf
from transformers import AutoTokenizer

import threading
peak_anon = [0]


def sample_anon():  # the process's own memory (heap), without the file pages it maps (Arrow, libraries)
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]) // 1024)
        time.sleep(0.2)


threading.Thread(target=sample_anon, daemon=True).start()
overrides, tok, train_steps = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(tok)
plan = make_plan(load_config(overrides))
stage = plan.stage("pretrain")
ctx = StageContext(name=stage.name, index=0, seed=0, train=OmegaConf.create(stage.train), languages=plan.languages,
                   config=plan.config, tokenizer=tokenizer)
out = {}
start = time.perf_counter()
texts, _ = text_for(list(stage.languages), plan.languages, plan.config)  # shards read into Arrow (cached)
out["read_seconds"] = time.perf_counter() - start
out["rows"] = sum(len(t) for t in texts.values())
out["read_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
del texts
start = time.perf_counter()
stream = stage_stream(stage, tokenizer, ctx)
out["prepare_seconds"] = time.perf_counter() - start
out["blocks"] = len(stream)
start = time.perf_counter()
tokens = 0
for _ in range(200):
    tokens += int(make_batch([next(stream) for _ in range(16)], 0, None)["num_tokens"])
out["draw_tokens_per_second"] = tokens / (time.perf_counter() - start)
out["pipeline_tokens_per_second"] = out["blocks"] * 128 / out["prepare_seconds"]  # text already read
start = time.perf_counter()
stage_stream(stage, tokenizer, ctx)
out["prepare_cached_seconds"] = time.perf_counter() - start
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # of the data work alone
out["peak_anon_mb"] = peak_anon[0]  # the same without file-backed pages (memory-mapped Arrow, shared libraries)
if train_steps:
    from accelerate import Accelerator
    from adaptlang.models import build_model
    from adaptlang.train import train_stage
    model = build_model(plan.config.model, tokenizer, 0)
    _, stats = train_stage(model, tokenizer, stream, [], ctx.train, train_steps, Accelerator(cpu=True), ctx)
    out["train_tokens_per_second"] = stats["tokens_per_second"]
print(json.dumps(out))
'''


def shard_folder(root: Path, code: str, text: str, scale: int, lines_per_shard: int = 2000) -> tuple[Path, int]:
    """``text`` repeated ``scale`` times as a folder of .jsonl/.txt shards; returns it and its bytes."""
    folder = root / code
    folder.mkdir(parents=True)
    lines = [line for line in text.splitlines() if line.strip()] * scale
    size = 0
    for i in range(0, len(lines), lines_per_shard):
        part = lines[i:i + lines_per_shard]
        n = i // lines_per_shard
        if n % 2:
            path, body = folder / f"shard-{n:05d}.txt", "\n".join(part) + "\n"
        else:
            path, body = folder / f"shard-{n:05d}.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in part)
        path.write_text(body, encoding="utf-8")
        size += path.stat().st_size
    return folder, size


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--tmp", default=None, help="folder for the shards and caches (deleted afterwards)")
    parser.add_argument("--no-mixture", action="store_true",
                        help="the stage's text joined and shuffled (no data.mixture), as the default stages")
    args = parser.parse_args()
    from adaptlang import load_config
    from adaptlang.languages import CORPORA, LanguageSet
    from adaptlang.pipeline import initial_model

    cfg = load_config([])
    langs = LanguageSet.from_config(cfg.languages)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        _, tokenizer = initial_model(cfg, langs)
        tokenizer.save_pretrained(f"{tmp}/tok")
        for i, scale in enumerate(int(s) for s in args.scales.split(",")):
            overrides = ["data.max_lines_per_language=null", f"data.num_proc={args.num_proc}",
                         f"data.cache_dir={tmp}/cache-{scale}", "experiment.stages.0.steps=8"]
            if not args.no_mixture:
                overrides.append("data.mixture.alpha=0.3")
            corpus = 0
            for code in langs.resolve("pretraining"):
                text = gzip.open(CORPORA / "ntrex128" / f"{langs.table[code].ntrex}.txt.gz", "rt", encoding="utf-8").read()
                folder, size = shard_folder(Path(tmp) / f"x{scale}", code, text, scale)
                corpus += size
                overrides.append(f"data.train_files.{code}={folder}")
            started = time.perf_counter()
            env = {**os.environ, "HF_DATASETS_CACHE": f"{tmp}/datasets-{scale}"}  # not ~/.cache: deleted with tmp
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides), f"{tmp}/tok",
                                  str(args.train_steps if i == 0 else 0)], capture_output=True, text=True, check=True,
                                 env=env)
            shutil.rmtree(Path(tmp) / f"x{scale}")  # this scale's shards and caches, before the next one's
            shutil.rmtree(Path(tmp) / f"datasets-{scale}", ignore_errors=True)
            shutil.rmtree(Path(tmp) / f"cache-{scale}", ignore_errors=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"scale": scale, "corpus_mb": corpus / 2**20, "wall_seconds": time.perf_counter() - started,
                         **row})
    train = rows[0].get("train_tokens_per_second")
    print(f"{'corpus':>6s} {'MB':>7s} {'rows':>9s} {'read s':>7s} {'blocks':>9s} {'prepare s':>9s} {'cached s':>8s} "
          f"{'tokenize tok/s':>14s} {'draw tok/s':>11s} {'peak RSS MB':>11s} {'anon MB':>8s}")
    for r in rows:
        print(f"{r['scale']:5d}x {r['corpus_mb']:7.1f} {r['rows']:9d} {r['read_seconds']:7.1f} {r['blocks']:9d} "
              f"{r['prepare_seconds']:9.1f} {r['prepare_cached_seconds']:8.1f} {r['pipeline_tokens_per_second']:14,.0f} "
              f"{r['draw_tokens_per_second']:11,.0f} {r['peak_rss_mb']:11.0f} {r.get('peak_anon_mb', 0):8.0f}")
    if train:
        print(f"training loop (tiny default, batch 16 x 128): {train:,.0f} tokens/s; tokenizing / training "
              f"{rows[0]['pipeline_tokens_per_second'] / train:.1f}x, drawing / training "
              f"{rows[0]['draw_tokens_per_second'] / train:.0f}x")
    if len(rows) > 1:
        print(f"peak RSS {rows[-1]['scale']}x / {rows[0]['scale']}x: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    emit("data_pipeline", rows=rows, train_tokens_per_second=train)


if __name__ == "__main__":
    main()
