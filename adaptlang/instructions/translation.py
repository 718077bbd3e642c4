"""Sentence-level translation instructions from the FLORES-200 *pool* (devtest lines 0-499,
never the evaluation part): English -> each stage language (Instruct-Align section 3.1,
the "sentence" granularity of Table 1)."""
from __future__ import annotations

import random

from ..sources import FLORES_POOL, flores_lines
from ..languages import load_table
from . import load_templates, register_source


@register_source("translation")
def translation_instructions(languages, cfg, seed) -> list[dict]:
    table = load_table()
    templates = load_templates("translation")["templates"]
    rng = random.Random(seed)
    english = flores_lines("eng_Latn", FLORES_POOL)
    out = []
    for code in languages:
        lang = table.get(code)
        if lang is None or lang.flores is None or code == "en":
            continue
        for src, tgt in zip(english, flores_lines(lang.flores, FLORES_POOL)):
            t = rng.choice(templates)
            out.append({
                "prompt": t["prompt"].format(src_name="English", tgt_name=lang.name, source=src),
                "target": " " + tgt,
                "source_language": "en", "target_language": code, "template_id": t["id"],
            })
    return out
