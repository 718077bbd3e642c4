"""Run every performance benchmark, each in its own process, one after the other, and print
one table of the figures against the targets (issue #8). Each script's own output goes to
the terminal as it runs (or, with --log, to that file); the table comes last.

    python bench/run_all.py                 # about 16 minutes on a quiet 2-core CPU
    python bench/run_all.py --only train,memory --log /tmp/bench.log

Benchmarks: train (bench/perf_train.py: adaptlang's loop vs HF Trainer vs a bare loop, MFU,
profile), compile (bench/perf_compile.py: train.compile vs eager), strategies
(bench/perf_strategies.py: af+replay+vocab vs no strategy over the default pipeline), eval
(bench/eval_suite.py: the full default suite, label-scoring speed-up), memory
(bench/perf_memory.py: peak RSS at 1x and 10x the corpus), vocab (bench/vocab_bench.py at the
paper's sizes: a 32000-piece base merged with a 16000-piece new-language model).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {
    "train": ["perf_train.py"],
    "compile": ["perf_compile.py"],
    "strategies": ["perf_strategies.py", "--repeats", "2"],
    "eval": ["eval_suite.py"],
    "memory": ["perf_memory.py"],
    "vocab": ["vocab_bench.py", "--steps", "3", "model.tokenizer.vocab_size=32000", "strategy.vocab.vocab_size=16000"],
}


def rows(figures: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) for the table; met is yes/no/'' (no target)."""
    out = []

    def add(name, value, target="", ok=None):
        out.append((name, value, target, "" if ok is None else ("yes" if ok else "NO")))

    if t := figures.get("train"):
        tps = t["tokens_per_second"]
        add("training: adaptlang loop, useful tokens/s", f"{tps['adaptlang']:,.0f}")
        add("training: HF Trainer (dynamic padding), tokens/s", f"{tps['HF Trainer']:,.0f}")
        add("training: bare PyTorch loop (same packed batches), tokens/s", f"{tps['bare loop']:,.0f}")
        add("adaptlang / bare loop", f"{t['vs_bare']:.2f}x", ">= 0.95x", t["vs_bare"] >= 0.95)
        add("af+replay / no strategy, same data, median of the runs", f"{t['af_replay']:.3f}", ">= 0.95",
            t["af_replay"] >= 0.95)
        add("af+replay: share of loop time in strategy hooks + batch drawing (no strategy: "
            f"{t['plain_loop_share']:.2%})", f"{t['af_replay_loop_share']:.2%}")
        add("adaptlang / HF Trainer", f"{t['vs_trainer']:.2f}x", ">= 2.0x", t["vs_trainer"] >= 2.0)
        add("MFU, instruct mixture (executed FLOPs / fp32 matmul peak; wall, loop's own time)",
            f"{t['mfu']:.1%}, {t['loop_mfu']:.1%} ({t['achieved_gflops']:.0f} of {t['peak_gflops']:.0f} GFLOP/s)",
            ">= 50%", t["loop_mfu"] >= 0.5)
        add("MFU, language-modelling blocks (wall, loop's own time)",
            f"{t['lm_blocks_mfu']:.1%}, {t['lm_blocks_loop_mfu']:.1%}", ">= 50%", t["lm_blocks_loop_mfu"] >= 0.5)
    if c := figures.get("compile"):
        add("train.compile / eager, tokens/s", f"{c['vs_eager']:.2f}x (warm-up {c['compile_warmup_seconds']:.0f} s)",
            ">= 1.2x", c["vs_eager"] >= 1.2)
    if s := figures.get("strategies"):
        add(f"{s['strategy']} / none, whole default run, training time", f"{s['train_ratio']:.3f}", ">= 0.95",
            s["train_ratio"] >= 0.95)
        add(f"{s['strategy']} / none, whole default run, training + set-up", f"{s['total_ratio']:.3f}")
        add(f"{s['strategy']} / none, executed FLOP/s (vocab enlarges the LM head, freezes the body)",
            f"{s['flop_ratio']:.3f}")
        add(f"{s['strategy']}: share of training time in strategy hooks + extra batch drawing",
            f"{s['hook_share']:.2%} + {s['extra_data_share']:.2%}", "<= 5%", s["hook_share"] + s["extra_data_share"] <= 0.05)
        for stage, ratio in s["per_stage"].items():
            add(f"  {stage}: tokens/s vs none (set-up {s['setup_seconds'][stage]:.1f}s vs "
                f"{s['plain_setup_seconds'][stage]:.1f}s)", f"{ratio:.3f}")
    if e := figures.get("eval"):
        for name, sec in e["seconds"].items():
            add(f"evaluation: {name}, seconds", f"{sec:.1f}")
        add("evaluation: full default suite, seconds", f"{e['total_seconds']:.1f}")
        add("label scoring: prefix reuse / pair by pair", f"{e['scoring_speedup']:.2f}x faster",
            "", None)
    if m := figures.get("memory"):
        add(f"peak RSS, data preparation, 1x corpus ({m['lines_1x']:,} lines), MB", f"{m['rss_1x_mb']:.0f}")
        add(f"peak RSS, data preparation, 10x corpus ({m['lines_10x']:,} lines), MB", f"{m['rss_10x_mb']:.0f}")
        add("peak RSS 10x / 1x", f"{m['ratio']:.2f}", "flat (well under 10)", m["ratio"] < 2)
    if v := figures.get("vocab"):
        add(f"vocab merge {v['base_pieces']} + {v['new_model_pieces']} pieces (+{v['added']} added), seconds",
            f"{v['merge_seconds']:.1f}", "seconds", v["merge_seconds"] < 60)
        add("vocab strategy set-up (learn new vocabulary + merge + resize + fertility), seconds",
            f"{v['setup_seconds']:.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    ap.add_argument("--log", help="send the scripts' own output to this file instead of the terminal")
    args = ap.parse_args()
    chosen = args.only.split(",")
    unknown = [c for c in chosen if c not in RUNS]
    if unknown:
        sys.exit(f"run_all: unknown benchmark {', '.join(unknown)}; valid: {', '.join(RUNS)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    log = open(args.log, "w", encoding="utf-8") if args.log else None
    figures, seconds = {}, {}
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        env["ADAPTLANG_BENCH_OUT"] = out.name
        for name in chosen:
            script, *rest = RUNS[name]
            print(f"== {name}: python bench/{script} {' '.join(rest)}", flush=True)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, str(HERE / script), *rest], env=env, stdout=log or None,
                                  stderr=subprocess.STDOUT if log else None)
            seconds[name] = time.perf_counter() - started
            if done.returncode != 0:
                print(f"   {name} failed (exit {done.returncode}); its figures are missing below", flush=True)
        for line in out:
            record = json.loads(line)
            figures[record.pop("bench")] = record
    import torch

    print(f"\n## adaptlang performance, {datetime.date.today().isoformat()}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average at the end {os.getloadavg()[0]:.1f}; "
          f"benchmark seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print("\n| figure | value | target | met |\n|---|---:|---|---|")
    for name, value, target, met in rows(figures):
        print(f"| {name} | {value} | {target} | {met} |")


if __name__ == "__main__":
    main()
