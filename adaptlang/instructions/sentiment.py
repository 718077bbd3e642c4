"""English sentiment classification as instructions (``english_sentiment``): the NusaX English
*train* split (500 rows; corpora/nusax/sentiment/english/train.csv, never its test rows), each
row under one of three English prompts in turn (templates/english_sentiment.yaml; by row, not
by seed, so that replay's past data holds the very examples the tune stage trained on), the
label word as the target after one space.

Why: the tiny Instruct-Align stand-in (experiment ``ia``) replaces BLOOMZ, which was tuned on
xP3 (Muennighoff et al. 2023), whose English prompts include sentiment tasks (P3's IMDB, Yelp,
Amazon, Rotten Tomatoes, App Reviews); IA section 4.3's zero-shot evaluation relies on that
skill. Tuned on the vendored English data alone (GSM8K, self-instruct), the stand-in gave every
NusaX / NusaWrites prompt the same answer (docs/reproduce.md). Deviation: xP3's sentiment
data is other English reviews; NusaX English train is the evaluation's domain (English
translations of the same kind of Indonesian texts; other sentences than the test rows).
"""
from __future__ import annotations

import csv

from ..languages import CORPORA
from . import load_templates, register_source

TRAIN = CORPORA / "nusax" / "sentiment" / "english" / "train.csv"


@register_source("english_sentiment")
def english_sentiment(languages, cfg, seed) -> list[dict]:
    prompts = load_templates("english_sentiment")["prompts"]
    with open(TRAIN, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"prompt": prompts[i % len(prompts)].format(text=row["text"].strip()), "target": " " + row["label"],
             "source_language": "en", "target_language": "en", "template_id": "english_sentiment",
             "origin": "nusax_english_train"} for i, row in enumerate(rows)]
