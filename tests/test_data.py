import gzip
import sys

import pytest
from omegaconf import OmegaConf

from adaptlang import UserError
from adaptlang.sources import FLORES_EVAL, FLORES_POOL, flores_lines, heldout_texts, read_text
from adaptlang.batching import collate
from adaptlang.data import ExampleStream, lm_examples, token_ids
from adaptlang.instructions import encode
from adaptlang.languages import CORPORA, LanguageSet, load_table


def cfg(**data):
    return OmegaConf.create({"data": {"train_files": {}, "eval_files": {}, **data}})


def test_language_table_and_paper_classes():
    table = load_table()
    assert len(table) == 59
    from adaptlang.config import load_config

    langs = LanguageSet.from_config(load_config([]).languages)
    assert len(langs.classes["pretraining"]) == 12 and len(langs.classes["adapting"]) == 14
    assert "no" in langs.classes["adapting"]  # YAML must not turn Norwegian into False
    assert langs.resolve("adapting")[:2] == ["ja", "fr"]
    with pytest.raises(UserError, match="unknown language code 'xx'"):
        LanguageSet({"a": ["xx"]})
    with pytest.raises(UserError, match="neither a language class"):
        langs.resolve("adaptng")


def test_flores_pool_and_evaluation_part_are_disjoint():
    assert set(FLORES_POOL).isdisjoint(FLORES_EVAL)
    assert len(FLORES_POOL) + len(FLORES_EVAL) == 1012
    pool, held = flores_lines("fra_Latn", FLORES_POOL), flores_lines("fra_Latn", FLORES_EVAL)
    assert set(pool).isdisjoint(held)


def test_heldout_falls_back_to_udhr_and_never_uses_training_text():
    langs = LanguageSet({"x": ["se", "fr"]})
    texts, source = heldout_texts("se", langs, cfg(), 5)
    assert source.startswith("UDHR") and len(texts) == 5
    texts, source = heldout_texts("fr", langs, cfg(), None)
    assert len(texts) == 512
    training = set(read_text(str(__import__("adaptlang").languages.CORPORA / "ntrex128" / "fra.txt.gz")))
    assert training.isdisjoint(texts)


def test_read_text_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_text(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_text(str(empty))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(UserError, match="no non-empty text"):
        read_text(str(blank))


def test_read_text_from_files_and_a_local_dataset_folder(tmp_path):
    gz = tmp_path / "a.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("one\n\ntwo\n")
    assert read_text(str(gz)) == ["one", "two"]
    folder = tmp_path / "my_dataset"  # same code path as a hub dataset name
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "alpha"}\n{"text": "beta"}\n')
    assert read_text(str(folder)) == ["alpha", "beta"]
    assert read_text(str(folder), limit=1) == ["alpha"]


def test_lm_blocks(tokenizer):
    ds = lm_examples(["hello world"] * 50, tokenizer, 16)
    assert len(ds) > 3 and all(len(x) == 16 for x in ds["input_ids"])
    assert ds.column_names == ["input_ids"]  # an LM block's labels are its inputs
    assert collate([ds[0]], 0)["labels"].tolist() == [ds[0]["input_ids"]]


def test_lm_blocks_are_those_of_the_plain_tokenizer_call_cut_every_1000_texts(tokenizer):
    texts = read_text(str(CORPORA / "ntrex128" / "rus.txt.gz"), 1500)
    texts += read_text(str(CORPORA / "ntrex128" / "eng-US.txt.gz"), 1000)
    assert token_ids(tokenizer, texts[:50] + ["<s> </s> \t x"]) == tokenizer(texts[:50] + ["<s> </s> \t x"],
                                                                          add_special_tokens=False)["input_ids"]
    expected = []
    for start in range(0, len(texts), 1000):  # the blocks before the tokenizer was called 10 groups at a time
        flat = [t for x in tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"]
                for t in x + [tokenizer.eos_token_id]]
        expected += [flat[i:i + 64] for i in range(0, len(flat) // 64 * 64, 64)]
    assert list(lm_examples(texts, tokenizer, 64)["input_ids"]) == expected


def test_blocks_count_their_tokens_per_language_and_stay_the_same(tokenizer, tmp_path):
    # rus rows 0-1499, eng 1500-2499: the group of texts 1000-1999 has a block mixing both
    texts = read_text(str(CORPORA / "ntrex128" / "rus.txt.gz"), 1500)
    texts += read_text(str(CORPORA / "ntrex128" / "eng-US.txt.gz"), 1000)
    plain = lm_examples(texts, tokenizer, 64)
    counted = lm_examples(texts, tokenizer, 64, rows_by_language=[1500, 1000])
    assert list(counted["input_ids"]) == list(plain["input_ids"])
    expected = []  # every token's language, cut as the ids are
    for start in range(0, len(texts), 1000):
        ids = token_ids(tokenizer, texts[start:start + 1000])
        flat = [int(start + i >= 1500) for i, x in enumerate(ids) for _ in range(len(x) + 1)]
        for b in range(0, len(flat) // 64 * 64, 64):
            block = flat[b:b + 64]
            expected.append([pair for code in (0, 1) if block.count(code) for pair in (code, block.count(code))])
    assert list(counted["language_tokens"]) == expected
    assert sum(len(pairs) == 4 for pairs in expected) == 1
    stream = ExampleStream(counted, seed=0, languages=["ru", "en"])
    drawn = [next(stream) for _ in range(len(counted) + 5)]  # one epoch and 5 blocks of the next
    assert all(set(example) == {"input_ids"} for example in drawn)
    realized = stream.realized()["tokens_by_language"]
    assert sum(realized.values()) == 64 * len(drawn)
    assert realized["ru"] >= sum(n for pairs in expected for code, n in zip(pairs[::2], pairs[1::2]) if code == 0)
    parallel = lm_examples(texts, tokenizer, 64, str(tmp_path), "key", num_proc=2, rows_by_language=[1500, 1000])
    totals = [sum(n for pairs in parallel["language_tokens"] for c, n in zip(pairs[::2], pairs[1::2]) if c == code)
              for code in (0, 1)]
    assert sum(totals) == 64 * len(parallel)
    assert totals[1] == pytest.approx(sum(len(x) + 1 for x in token_ids(tokenizer, texts[1500:])), abs=2 * 64)


def test_example_stream_is_seeded_and_covers_each_epoch():
    items = [{"i": i} for i in range(10)]
    a, b = ExampleStream(items, 3), ExampleStream(items, 3)
    first = [next(a)["i"] for _ in range(10)]
    assert first == [next(b)["i"] for _ in range(10)]
    assert sorted(first) == list(range(10))
    state = a.state_dict()
    rest = [next(a)["i"] for _ in range(5)]
    c = ExampleStream(items, 3)
    c.load_state_dict(state)
    assert [next(c)["i"] for _ in range(5)] == rest


def test_collate_pads_labels_with_minus_100():
    batch = collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_instruction_loss_only_on_target(tokenizer):
    ex = encode({"prompt": "Translate: hello", "target": " privet"}, tokenizer, 64)
    target = tokenizer(" privet", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [x for x in ex["labels"] if x != -100] == target
    assert ex["input_ids"][-len(target):] == target
    assert len(ex["input_ids"]) == len(ex["labels"])
    long = encode({"prompt": "word " * 200, "target": "answer " * 200}, tokenizer, 40)
    assert len(long["input_ids"]) == 40 and any(x != -100 for x in long["labels"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps: Linux")
def test_released_pages_of_a_mapped_arrow_file_leave_rss_and_read_back_the_same(tmp_path):
    import datasets

    from adaptlang.mapped_pages import release_mapped_pages

    blocks = datasets.Dataset.from_dict({"input_ids": [[i] * 256 for i in range(4000)]}).map(
        lambda batch: batch, batched=True, cache_file_name=str(tmp_path / "blocks.arrow"))

    def resident_kb() -> int:  # this process's resident pages of blocks.arrow
        total, mapping = 0, ""
        for line in open("/proc/self/smaps"):
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                mapping = fields[-1]
            elif fields[0] == "Rss:" and mapping.endswith("blocks.arrow"):
                total += int(fields[1])
        return total

    before = [blocks[i]["input_ids"][0] for i in range(len(blocks))]
    assert resident_kb() > 1000  # 4 MB read through the mapping
    release_mapped_pages(blocks)
    assert resident_kb() < 100
    assert [blocks[i]["input_ids"][0] for i in range(len(blocks))] == before == list(range(4000))
    release_mapped_pages(["not a dataset"])  # a list: nothing to release
    in_memory = datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 10})
    release_mapped_pages(in_memory)  # held in memory, never advised
    assert in_memory[9]["input_ids"] == [1, 2]
