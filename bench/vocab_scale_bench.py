"""Vocabulary expansion at Llama 3 scale (issue #18 item 6): a 128k-piece byte-level BPE base
extended by 16k pieces; the time of each phase and the peak memory, at several base sizes to
see how they grow.

The base tokenizer is a byte-level BPE (GPT-2 / Llama 3 kind) trained with ``tokenizers`` on
every vendored text (NTREX-128, FLORES-200 dev + devtest, UDHR) of the languages outside
the adapting class, once at the largest size; smaller bases are its first N pieces and the
merges that build them (a BPE vocabulary ordered by merge rank truncates consistently). The
new-language model is learned on every vendored text of the adapting languages; the merge
protects every vendored text of the pretraining languages, as ``strategy=vocab`` does.

Each size runs in its own process (peak RSS is per process), with a one-layer Llama whose
token embeddings and untied head have the base's rows and ``--hidden`` columns (Llama 3 8B:
4096), in ``--dtype``. Phases: learn (new BPE model), merge (candidates, protection rounds),
tokenizer (the transformers tokenizer of the merged JSON), resize (embeddings and head),
init (``--init`` rows of both).

    PYTHONPATH=. python bench/vocab_scale_bench.py [--sizes 32000,64000,128000] [--new 16000]
                                                   [--hidden 4096] [--dtype bfloat16] [--init subword-mean]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _emit import emit  # noqa: E402


def corpus(classes: str, split: str) -> list[str]:
    """Every vendored text (as ``strategy=vocab`` protects it: training text, FLORES-200 dev +
    devtest, UDHR) of the languages in (``in``) or outside (``out``) the adapting class."""
    from adaptlang import load_config
    from adaptlang.languages import LanguageSet
    from adaptlang.strategies.vocab import protected_texts

    cfg = load_config([])
    languages = LanguageSet.from_config(cfg.languages)
    adapting = set(languages.resolve(["adapting"]))
    codes = [c for c in languages.resolve([classes]) if (c in adapting) == (split == "in")]
    return protected_texts(codes, languages, cfg)


def train_base(size: int, folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus("all", "out"), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(folder)


def truncated(folder: Path, size: int):
    """The base's first ``size`` pieces and the merges among them."""
    from transformers import AutoTokenizer

    from adaptlang.strategies.vocab import merge as vm

    full = AutoTokenizer.from_pretrained(folder)
    data = json.loads(full.backend_tokenizer.to_str())
    vocab = {p: i for p, i in data["model"]["vocab"].items() if i < size}
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = [m for m in data["model"]["merges"] if "".join(vm._pair(m)) in vocab
                               and all(x in vocab for x in vm._pair(m))]
    return vm.to_transformers(full, data)


def one_size(args) -> dict:
    """Runs in the child process: the phases for one base size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptlang import load_config
    from adaptlang.strategies.vocab import merge as vm
    from adaptlang.languages import LanguageSet
    from adaptlang.strategies.vocab import protected_texts

    base = truncated(Path(args.base), args.size)
    cfg = load_config([])
    languages = LanguageSet.from_config(cfg.languages)
    new_text = corpus("adapting", "in")
    protect = protected_texts(languages.resolve(["pretraining"]), languages, cfg)
    times = {}
    t = time.perf_counter()
    new = vm.train_new_vocabulary(new_text, args.new, like=base)
    times["learn"] = time.perf_counter() - t
    t = time.perf_counter()
    data, stats = vm.merge_vocabularies(base, new, protect, len(base))
    times["merge"] = time.perf_counter() - t
    t = time.perf_counter()
    merged = vm.to_transformers(base, data)
    times["tokenizer"] = time.perf_counter() - t
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(vocab_size=len(base), hidden_size=args.hidden, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(dtype)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_old = len(base)
    pieces = [p for p, i in sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1]) if i >= n_old]
    new_ids = list(range(n_old, n_old + len(pieces)))
    t = time.perf_counter()
    vm.grow_embeddings(model, n_old + len(pieces))
    times["resize"] = time.perf_counter() - t
    t = time.perf_counter()
    subword = vm.old_piece_ids(base, pieces) if args.init == "subword-mean" else []
    for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        vm.init_rows(weight, new_ids, n_old, args.init, subword, None)
    times["init"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    return {"base": n_old, "added": stats["added_tokens"], "new_model": len(new["vocab"]), "merged": len(merged),
            "rounds": stats["rounds"], "dropped": stats["dropped_for_old_languages"], "protected_texts": len(protect),
            "new_texts": len(new_text), "seconds": {k: round(v, 2) for k, v in times.items()},
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "rss_after_model_gb": round(rss_model / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32000,64000,128000")
    parser.add_argument("--new", type=int, default=16000)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--init", default="subword-mean", choices=["mean", "subword-mean"])
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size:
        print(json.dumps(one_size(args)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train_base(max(sizes), Path(tmp))
        print(f"base byte-level BPE of {max(sizes)} pieces trained in {time.perf_counter() - t:.0f}s (setup, not timed below)")
        print("\n| base pieces | added | merge rounds | learn s | merge s | tokenizer s | resize s | init s | total s "
              "| peak RSS GB | RSS with model GB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in sizes:
            out = subprocess.run([sys.executable, __file__, "--size", str(size), "--base", tmp, "--new", str(args.new),
                                  "--hidden", str(args.hidden), "--dtype", args.dtype, "--init", args.init],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            s = r["seconds"]
            print(f"| {r['base']} | {r['added']} | {r['rounds']} | {s['learn']} | {s['merge']} | {s['tokenizer']} | "
                  f"{s['resize']} | {s['init']} | {s['total']} | {r['peak_rss_gb']} | {r['rss_after_model_gb']} |",
                  flush=True)
            emit("vocab_scale", base=r["base"], added=r["added"], hidden=args.hidden, dtype=args.dtype, **s,
                 peak_rss_gb=r["peak_rss_gb"])


if __name__ == "__main__":
    main()
