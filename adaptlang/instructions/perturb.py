"""Perturbation functions of Instruct-Align section 3.1 (Table 1): g_word and g_span.

"g_word(.) is a word-level perturbation function that randomly masks out a token from a
sentence generating the perturbed sentence Y~"; g_span does the same with a span. Table 1
shows the masked words *deleted* (Y = "Dia memakan dua buah mangga" -> g_word(Y) =
"Dia dua buah ..."; g_span(Y) = "Dia memakan"), so by default the words are cut out with
the whitespace that joined them; ``mask="<mask>"`` leaves a placeholder instead.

Words are whitespace-separated runs (punctuation stays attached, e.g. "mangga."), except in
scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar), where each character
(and CJK punctuation) counts as a word (a deviation: the paper's languages all separate words
by spaces; without it a Japanese sentence would be one "word"). There, removing a character
can join the Latin-script runs on either side of it into one word; the sentence is still the
original with exactly one piece removed. Everything
else in the sentence is kept byte for byte: the perturbed sentence is the original with one
contiguous piece removed (or replaced by the mask).

``g_authors`` is the perturbation of the authors' released code instead (augmentation_utils.py
and run_t2t_finetuning.py of HLTCHKUST/InstructAlign): one of infilling (each word replaced by
``___`` with p=0.2), deletion (each word dropped with p=0.2) and permutation (the words
shuffled), or two or three of them in turn, with the release's probabilities (one: 0.24 each;
two: 0.08 each; all three: 0.04); the words are re-joined by single spaces. Words are this
module's words, not nltk's word_tokenize (punctuation stays attached).

Deviation/choice (the paper gives no span length): a span is 2..``max_span`` consecutive
words, never the whole sentence, so g_word needs >= 2 words and g_span >= 3.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

# characters of scripts that do not separate words by spaces
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
# combining marks of those scripts stay with the character they sit on
_MARKS = "\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd\u102b-\u103e\u17b6-\u17d3"
WORD = re.compile(f"[{_UNSPACED}][{_MARKS}]*|[^\\s{_UNSPACED}]+")


@dataclass(frozen=True)
class Perturbed:
    text: str  # the perturbed sentence g(Y)
    removed: str  # the words taken out, as they appeared in Y
    first_word: int  # index of the first removed word
    n_words: int  # how many words were removed
    kind: str = ""  # "" (one word or span cut out) | "authors" (g_authors)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def cut(text: str, first: int, n: int, mask: str = "") -> Perturbed:
    """Remove words first..first+n-1 of ``text`` (or replace them by ``mask``)."""
    spans = [m.span() for m in WORD.finditer(text)]
    if not (0 <= first and n >= 1 and first + n <= len(spans)):
        raise ValueError(f"cannot remove words {first}..{first + n - 1} of a {len(spans)}-word sentence")
    start, end = spans[first][0], spans[first + n - 1][1]
    removed = text[start:end]
    if mask:
        return Perturbed(text[:start] + mask + text[end:], removed, first, n)
    if first > 0:  # take the whitespace before the cut with it
        start = spans[first - 1][1]
    elif first + n < len(spans):  # cut at the start: take the whitespace after it
        end = spans[first + n][0]
    return Perturbed(text[:start] + text[end:], removed, first, n)


def g_word(text: str, rng: random.Random, mask: str = "") -> Perturbed | None:
    """One random word removed; None when the sentence has fewer than 2 words."""
    n = len(words(text))
    if n < 2:
        return None
    return cut(text, rng.randrange(n), 1, mask)


def g_span(text: str, rng: random.Random, max_span: int = 4, mask: str = "") -> Perturbed | None:
    """A random span of 2..max_span consecutive words removed (at least one word stays);
    None when the sentence has fewer than 3 words."""
    n = len(words(text))
    longest = min(int(max_span), n - 1)
    if longest < 2:
        return None
    length = rng.randint(2, longest)
    return cut(text, rng.randrange(n - length + 1), length, mask)


AUTHORS_P = 0.2
# (cumulative probability, perturbations applied in turn), as run_t2t_finetuning.py draws them
AUTHORS_COMBINATIONS = ((0.24, ("infilling",)), (0.48, ("deletion",)), (0.72, ("permutation",)),
                        (0.80, ("infilling", "deletion")), (0.88, ("infilling", "permutation")),
                        (0.96, ("deletion", "permutation")), (1.0, ("infilling", "deletion", "permutation")))


def g_authors(text: str, rng: random.Random) -> Perturbed | None:
    """The released code's perturbation (see the module docstring); None for an empty sentence."""
    tokens = words(text)
    if not tokens:
        return None
    draw = rng.random()
    steps = next(combo for limit, combo in AUTHORS_COMBINATIONS if draw < limit)
    for step in steps:
        if step == "infilling":
            tokens = ["___" if rng.random() < AUTHORS_P else t for t in tokens]
        elif step == "deletion":
            tokens = [t for t in tokens if rng.random() >= AUTHORS_P]
        else:
            rng.shuffle(tokens)
    return Perturbed(" ".join(tokens), "+".join(steps), 0, 0, kind="authors")
