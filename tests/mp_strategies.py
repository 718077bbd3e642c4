"""Run by tests/test_multiprocess.py under ``torchrun --nproc_per_node 2``: whole pipelines with
``train.fsdp=true`` (3 stages, a few steps each) for groups of built-in strategies that together
cover every one that shards, then the first group's run interrupted mid-stage (an exception on
every rank after a checkpoint) and resumed, against its uninterrupted run. Rank 0 writes
``results.json`` in argv[1]: per group, whether every stage model loads with plain transformers
(a group's error ends the torchrun, and the test shows its traceback); for the resume, whether
the resumed stage models equal the uninterrupted run's bit for bit. The groups are argv[2:]
(``strategy=`` values)."""
import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import adaptlang  # noqa: E402
from adaptlang.composition import compose  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from conftest import QUICK  # noqa: E402
from mp_train import Interrupted, StopAt  # noqa: E402

SETTINGS = [o for o in QUICK if not o.startswith("train.max_steps")] + [
    "device=cpu", "train.fsdp=true", "train.max_steps=4", "train.checkpoint_every=2", "eval.max_sentences=2"]
# the strategies' own data work kept small: this test is about sharding, not tokenizers or bitext
SMALLER = {"vocab": ["strategy.vocab.vocab_size=2000", "strategy.vocab.fertility=none"],
           "xling": ["strategy.xling.max_pairs=16"]}


def settings(group: str) -> list[str]:
    return SETTINGS + [f"strategy={group}"] + [o for name in group.split("+") for o in SMALLER.get(name, [])]


def loads_plain(run: Path) -> bool:
    """Every stage model loads with plain transformers, with finite weights."""
    from transformers import AutoModelForCausalLM
    for folder in sorted((run / "stages").glob("*/model")):
        model = AutoModelForCausalLM.from_pretrained(folder)
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            return False
    return any((run / "stages").glob("*/model"))


def stage_weights(run: Path) -> dict[str, bytes]:
    return {p.parent.parent.name: p.read_bytes() for p in sorted((run / "stages").glob("*/model/model.safetensors"))}


def main(out: str, groups: list[str]) -> None:
    out_dir = Path(out)
    results = {"groups": {}}
    configs = [adaptlang.load_config(settings(group) + [f"output_dir={out_dir}", f"name=group{i}"])
               for i, group in enumerate(groups)]
    # every group's strategies built before the first run starts the process group, as adaptlang run does
    # (avalanche-lib cannot be imported first on rank 1 after that)
    composed = [compose(OmegaConf.to_container(cfg.strategy)) for cfg in configs]
    for i, group in enumerate(groups):
        # not caught: a rank that fails exits, and torchrun stops the other at once (caught, the
        # other rank would wait in its next collective until the test's subprocess timeout)
        adaptlang.run(configs[i], composed[i])
        results["groups"][group] = {"plain": loads_plain(out_dir / f"group{i}")}
    cfg = adaptlang.load_config(settings(groups[0]) + [f"output_dir={out_dir}", "name=cut"])
    composed = compose(OmegaConf.to_container(cfg.strategy))
    composed.items.append((StopAt(3), ("adapt",)))
    try:
        adaptlang.run(cfg, composed)
        results["interrupted"] = False
    except Interrupted:
        results["interrupted"] = True
    adaptlang.resume(str(out_dir / "cut"))
    ours, theirs = stage_weights(out_dir / "cut"), stage_weights(out_dir / "group0")
    results["resumed_stages"] = sorted(ours)
    results["resume_equal"] = ours == theirs and len(ours) == 3
    if int(os.environ.get("RANK", "0")) == 0:
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2:])
