"""Scoring of the AF paper's reading-comprehension prompts (XQuAD, MLQA): SQuAD v1.1 exact
match and token F1 against the best of the gold answers (Rajpurkar et al. 2016's official
script: lower case, punctuation and English articles removed, whitespace collapsed)."""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

PUNCTUATION = set(string.punctuation)


def answer_texts(dataset):
    """Rows with ``answers`` as the list of answer texts (XQuAD and MLQA store a dict)."""
    return dataset.map(lambda doc: {"answers": list(doc["answers"]["text"])})


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower()
                   if ch not in PUNCTUATION and not unicodedata.category(ch).startswith("P"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1(prediction: str, gold: str) -> float:
    predicted, wanted = normalize(prediction).split(), normalize(gold).split()
    same = sum((Counter(predicted) & Counter(wanted)).values())
    if not predicted or not wanted:
        return float(predicted == wanted)
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)


def squad_scores(doc, results) -> dict:
    prediction = results[0].strip()
    golds = doc["answers"] or [""]
    return {"exact_match": max(float(normalize(prediction) == normalize(g)) for g in golds),
            "f1": max(f1(prediction, g) for g in golds)}
