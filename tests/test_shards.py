"""Sharded corpora: folders of .txt/.jsonl/.parquet shards, bad shards named by file and line,
and tokenized blocks cached by source, tokenizer and block size (issue #28)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adaptlang import UserError, load_config
from adaptlang.data import lm_examples
from adaptlang.plan import make_plan
from adaptlang.sources import read_text, source_fingerprint

from conftest import QUICK


def _corpus(folder):
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("one\n\ntwo\n")
    (folder / "sub" / "b.jsonl").write_text(json.dumps({"text": "three", "id": 1}) + "\n" + json.dumps({"text": "four"}) + "\n")
    pq.write_table(pa.table({"text": ["five", "six"], "n": [1, 2]}), folder / "c.parquet")
    (folder / "README.md").write_text("not a shard")
    return folder


def test_a_folder_of_mixed_shards_is_read_lazily_in_order(tmp_path):
    folder = _corpus(tmp_path / "corpus")
    assert read_text(str(folder)) == ["one", "two", "five", "six", "three", "four"]  # by format, then path
    assert read_text(str(folder), limit=3) == ["one", "two", "five"]


@pytest.mark.parametrize("shard, content, message", [
    ("b.jsonl", '{"text": "ok"}\n{"text": broken\n', r"b\.jsonl:2: not a JSON line"),
    ("b.jsonl", '{"body": "no text"}\n', r"b\.jsonl:1: no 'text' field \(fields: body\)"),
    ("b.txt", b"fine\n\xff\xfe bad\n", r"b\.txt:2: not UTF-8 text"),
    ("b.csv", "body,n\nx,1\n", r"b\.csv:1: no 'text' column in the CSV header \(columns: body, n\)"),
])
def test_a_bad_shard_is_named_by_file_and_line_before_anything_runs(tmp_path, shard, content, message):
    folder = _corpus(tmp_path / "corpus")
    (folder / "sub" / shard).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=f"data.train_files.fr: .*{message}"):
        make_plan(load_config([*QUICK, f"data.train_files.fr={folder}"]))
    with pytest.raises(UserError, match=message):
        read_text(str(folder))


def test_a_parquet_shard_without_a_text_column_is_refused(tmp_path):
    folder = _corpus(tmp_path / "corpus")
    pq.write_table(pa.table({"body": ["x"]}), folder / "d.parquet")
    with pytest.raises(UserError, match=r"d\.parquet: no 'text' column \(columns: body\)"):
        make_plan(load_config([*QUICK, f"data.train_files.fr={folder}"]))


def test_blocks_are_cached_by_source_tokenizer_and_block_size_and_reused(tmp_path, tokenizer):
    folder = _corpus(tmp_path / "corpus")
    key = source_fingerprint(str(folder), None)
    texts = read_text(str(folder)) * 40
    cache = tmp_path / "cache"
    first = lm_examples(texts, tokenizer, 8, str(cache), key)
    files = sorted(cache.glob("blocks-*.arrow"))
    assert len(files) == 1
    again = lm_examples(["different text, same key: the cache answers"] * 40, tokenizer, 8, str(cache), key)
    assert again["input_ids"] == first["input_ids"]  # reused, not recomputed
    lm_examples(texts, tokenizer, 16, str(cache), key)  # another block size: another file
    assert len(list(cache.glob("blocks-*.arrow"))) == 2
    (folder / "a.txt").write_text("one\ntwo\nmore\n")  # the source changed: another key
    assert source_fingerprint(str(folder), None) != key
    parallel = lm_examples(texts, tokenizer, 8, str(tmp_path / "p"), key, num_proc=2)
    assert len(parallel) > 0 and len(list((tmp_path / "p").glob("blocks-*.arrow"))) == 2  # one per process


def test_a_hub_source_with_a_config_is_read_from_a_dataset_repository_on_disk(tmp_path):
    # the hub: path of sources (load_dataset(name, config, streaming=True)), on a repository
    # laid out as on the hub, with per-language configs in its README card (no network)
    repo = tmp_path / "repo"
    for code, rows in {"fr": ["un", "", "deux", "trois"], "de": ["eins"]}.items():
        (repo / code).mkdir(parents=True)
        pq.write_table(pa.table({"text": rows, "url": ["u"] * len(rows)}), repo / code / "train-00000.parquet")
    (repo / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/*.parquet\n" for c in ("fr", "de")) + "---\n")
    assert read_text(f"hub:{repo}:fr") == ["un", "deux", "trois"]
    assert read_text(f"hub:{repo}:fr", limit=2) == ["un", "deux"]
    assert read_text(f"hub:{repo}:de") == ["eins"]
    pq.write_table(pa.table({"body": ["x"]}), repo / "de" / "train-00000.parquet")
    with pytest.raises(UserError, match=r"hub:.*:de: no 'text' column \(columns: body\)"):
        read_text(f"hub:{repo}:de")
