"""Property-based tests of the instruction generators on arbitrary Unicode text."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlang.instructions import encode
from adaptlang.instructions.perturb import g_span, g_word, words

text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FFFF, blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(text, st.integers(0, 2**32), st.sampled_from(["", "<mask>"]))
def test_g_word_removes_exactly_one_word_and_keeps_the_rest(sentence, seed, mask):
    p = g_word(sentence, random.Random(seed), mask)
    if len(words(sentence)) < 2:
        assert p is None
        return
    assert p.n_words == 1 and p.removed == words(sentence)[p.first_word]
    if mask:
        # the original is the perturbed text with the mask put back
        i = p.text.index(mask, 0) if p.text.count(mask) == 1 else None
        if i is not None:
            assert p.text[:i] + p.removed + p.text[i + len(mask):] == sentence
    else:
        assert len(p.text) < len(sentence)
        # every character left is in the original, in order
        it = iter(sentence)
        assert all(ch in it for ch in p.text)


@settings(max_examples=300, deadline=None)
@given(text, st.integers(0, 2**32), st.integers(2, 6))
def test_g_span_removes_a_contiguous_run_of_words(sentence, seed, max_span):
    p = g_span(sentence, random.Random(seed), max_span)
    n = len(words(sentence))
    if min(max_span, n - 1) < 2:
        assert p is None
        return
    assert 2 <= p.n_words <= max_span and p.n_words < n
    assert p.removed in sentence
    assert words(p.removed) == words(sentence)[p.first_word:p.first_word + p.n_words]
    it = iter(sentence)
    assert all(ch in it for ch in p.text)


@settings(max_examples=100, deadline=None)
@given(text, text, st.integers(8, 64))
def test_encode_never_exceeds_max_length_and_keeps_a_target(tokenizer, prompt, target, max_length):
    ex = encode({"prompt": prompt, "target": target}, tokenizer, max_length)
    assert len(ex["input_ids"]) == len(ex["labels"]) <= max_length
    assert any(label != -100 for label in ex["labels"])  # at least EOS carries a loss
