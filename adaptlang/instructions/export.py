"""``adaptlang instructions``: preview / export the instructions a stage would train on, as JSONL.

    adaptlang instructions strategy=xling+replay --out xling.jsonl --limit 50
    adaptlang instructions experiment=ia languages=nusax strategy=mlm --limit 10

The source is ``--source`` or the active ``xling``/``mlm`` strategy (default ``xling``); the
stage is the first one that strategy acts in (else the first stage whose data lists the
source); its ``data.languages`` are the new languages and the seed is the one the run would
use there ((seed, stage, "instructions/<source>"), adaptlang.seeds), so the file shows exactly what training sees.
``--limit N`` keeps a seeded random sample of N, in generation order.
Every line has granularity, template_id, source_language, target_language, prompt, target,
then the rest (prompt_language, source_text, target_text, perturbed, removed, origin, ...).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from ..composition import strategy_defaults
from ..errors import UserError, listing
from ..seeds import derive_seed
from ..strategy import STRATEGIES, load_plugins
from ..languages import LanguageSet
from . import SOURCES, build, load_builtin

FIELDS = ("granularity", "template_id", "source_language", "target_language", "prompt", "target")


def pick_stage(cfg, source: str) -> int:
    stages = list(cfg.experiment.stages)
    acting: list[str] = []
    if source in cfg.strategy:
        acting = list(cfg.strategy[source].stages)
    elif source in STRATEGIES:
        acting = list(strategy_defaults(source)["stages"])
    for i, stage in enumerate(stages):
        if stage.name in acting:
            return i
    for i, stage in enumerate(stages):
        if source in list(stage.data.get("sources") or []):
            return i
    raise UserError(f"no stage of this experiment uses instruction source '{source}' "
                    f"(stages: {listing(s.name for s in stages)})")


def export(cfg, source: str | None = None, out: str | None = None, limit: int | None = None) -> tuple[int, str]:
    load_builtin()
    load_plugins()
    if source is None:
        active = [n for n in ("xling", "mlm") if n in cfg.strategy]
        source = active[0] if active else "xling"
    SOURCES.get(source)  # unknown source: UserError listing the valid ones
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be >= 1")
    index = pick_stage(cfg, source)
    stage = cfg.experiment.stages[index]
    codes = LanguageSet.from_config(cfg.languages).resolve(stage.data.get("languages", "all"))
    examples = build(source, codes, cfg, derive_seed(int(cfg.seed), str(stage.name), f"instructions/{source}"))
    if limit is not None and limit < len(examples):
        keep = sorted(random.Random(int(cfg.seed)).sample(range(len(examples)), limit))
        examples = [examples[i] for i in keep]
    lines = []
    for e in examples:
        row = {k: e.get(k) for k in FIELDS}
        row.update({k: v for k, v in e.items() if k not in row})
        lines.append(json.dumps(row, ensure_ascii=False))
    text = "".join(line + "\n" for line in lines)
    if out in (None, "-"):
        sys.stdout.write(text)
        return len(lines), "stdout"
    path = Path(out)
    if path.parent and not path.parent.exists():
        raise UserError(f"--out {out}: folder {path.parent} does not exist")
    path.write_text(text, encoding="utf-8")
    return len(lines), str(path)
