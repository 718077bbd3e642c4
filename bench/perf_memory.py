"""Peak memory of preparing a stage's training data at 1x and 10x the default corpus.

Each scale runs in a fresh child process: read the text of the 12 pretraining languages
(1x: the vendored NTREX-128 text, 1997 lines per language; 10x: the same text repeated ten
times, written to local files and pointed at with data.train_files), tokenize it into LM
blocks, and draw 50 batches. Prints each child's peak RSS (ru_maxrss) and the ratio.

    python bench/perf_memory.py
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


def main() -> None:
    from adaptlang import load_config
    from adaptlang.languages import CORPORA, LanguageSet
    from adaptlang.pipeline import initial_model

    cfg = load_config([])
    langs = LanguageSet.from_config(cfg.languages)
    with tempfile.TemporaryDirectory() as tmp:
        _, tokenizer = initial_model(cfg, langs)
        tokenizer.save_pretrained(f"{tmp}/tok")
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
