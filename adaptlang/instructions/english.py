"""English instruction data (corpora/instructions/*.jsonl): GSM8K train (first 2000) and the
self-instruct seed tasks. This is the "past" instruction data replayed by ``replay``."""
from __future__ import annotations

import datasets

from ..languages import CORPORA
from . import load_templates, register_source

FILES = ("gsm8k_train_2000.jsonl", "self_instruct_seed_tasks.jsonl")


@register_source("english")
def english_instructions(languages, cfg, seed) -> list[dict]:
    templates = load_templates("english")
    out = []
    for name in FILES:  # one file at a time: each example records its file as ``origin``
        rows = datasets.load_dataset("json", data_files=str(CORPORA / "instructions" / name), split="train")
        for row in rows:
            extra = (row.get("input") or "").strip()
            template = templates["with_input"] if extra else templates["without_input"]
            out.append({
                "prompt": template.format(instruction=row["instruction"].strip(), input=extra),
                "target": row["output"].strip(),
                "source_language": "en", "target_language": "en", "template_id": "english",
                "origin": name.split(".")[0],
            })
    return out
