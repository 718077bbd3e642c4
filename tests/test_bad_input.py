"""The bad-input matrix: each mistake gives one clear line, exit code 2, and loses nothing."""
import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlang import UserError, load_config
from adaptlang.cli import main as cli_main
from adaptlang.config import parse_override

from conftest import QUICK


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def cases(tmp_path, model_dirs):
    bad_utf8 = write(tmp_path / "latin1.txt", "caf\xe9 cr\xe8me\n".encode("latin-1"))
    empty = write(tmp_path / "empty.txt", b"")
    bad_jsonl = write(tmp_path / "bad.jsonl", b'{"text": "ok"}\n{"text": broken\n')
    no_text_col = write(tmp_path / "cols.csv", b"a,b\n1,2\n")
    return [
        (["strategy=nope"], "unknown strategy 'nope'"),
        (["train.lrr=1"], "Did you mean 'lr'?"),
        (["train.steps=1"], "unknown key 'train.steps'"),
        (["experiment.stages.1.train.lrr=1"], "Did you mean 'lr'? Valid: batch_size, betas"),
        (["train.batch_size=many"], "expected a number"),
        (["experiment.stages.0.data.languages=[xx]"], "'xx' is neither a language class"),
        (["experiment.stages.0.data.languages=[se]"], "no training text for any of ['se']"),
        ([f"data.train_files.ar={tmp_path / 'missing.txt'}"], "does not exist"),
        ([f"data.train_files.ar={empty}"], "is empty"),
        ([f"data.train_files.ar={bad_utf8}"], "not UTF-8"),
        ([f"data.train_files.ar={bad_jsonl}"], "cannot read text from"),
        ([f"data.train_files.ar={no_text_col}"], "no 'text' column"),
        (["data.train_files.xx=/tmp/a.txt"], "unknown language code 'xx'"),
        ([f"model.name_or_path={tmp_path / 'no_model'}"], "does not exist"),
        ([f"model.name_or_path={model_dirs['bert']}"], "is an encoder-only model (distilbert), not a decoder-only"),
        ([f"model.name_or_path={model_dirs['t5']}"], "is an encoder-decoder (t5), not a decoder-only causal LM"),
        ([f"model.name_or_path={model_dirs['unknown']}"], "an architecture this transformers does not know"),
        ([f"model.name_or_path={model_dirs['mismatch']}"], "do not match"),
        (["experiment.stages.0.data.kind=video"], "data.kind='video'"),
        (["strategy=af", "strategy.af.every=0"], "must be a positive number"),
        (["name=../escape"], "plain folder name"),
        # rules between strategies and stages, all refused by the plan before the first step
        (["strategy=af+vocab", "experiment=paper", "strategy.af.stages=[pretrain,adapt]"],
         "'vocab' and 'af' conflict in stage 'adapt': both own embeddings.rows"),
        (["strategy=vocab+lwf"], "lwf keeps the model of stage 'pretrain' and applies it in stage 'adapt'"),
        (["strategy=vocab+lora", "strategy.vocab.body=lora"], "both own body.adapters"),
        (["strategy=xling+mlm"], "conflict in stage 'instruct': both own data.new_examples"),
        (["strategy=replay", "train.batch_size=5"], "needs an even train.batch_size"),
        (["strategy=af", "strategy.af.stages=[pretrian]"], "unknown stage 'pretrian'. Did you mean 'pretrain'?"),
        (["strategy=vocab", "strategy.vocab.protect=xx"], "strategy.vocab.protect"),
        (["strategy=vocab", "strategy.vocab.languages=fr", "strategy.vocab.vocab_size=100000"],
         "strategy.vocab.vocab_size=100000: the new languages' text (60 lines of fr) supports at most"),
        (["experiment.stages.1.train.lr=1", "train.batch_size=0"], "stage 'pretrain': train.batch_size=0"),
    ]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer):
    from transformers import DistilBertConfig, DistilBertModel

    from conftest import make_model

    root = tmp_path_factory.mktemp("models")
    bert = DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2,
                                            hidden_dim=32))  # an encoder: not a causal LM
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, num_layers=1,
                                             num_heads=2, d_kv=8))
    t5.save_pretrained(root / "t5")
    tokenizer.save_pretrained(root / "t5")
    (root / "unknown").mkdir()
    (root / "unknown" / "config.json").write_text('{"model_type": "no_such_architecture"}')
    small = make_model(tokenizer)
    small.resize_token_embeddings(50)
    small.save_pretrained(root / "mismatch")
    tokenizer.save_pretrained(root / "mismatch")
    return {name: root / name for name in ("bert", "t5", "unknown", "mismatch")}


def test_bad_input_matrix(tmp_path, model_dirs, capsys):
    out = tmp_path / "runs"
    for args, fragment in cases(tmp_path, model_dirs):
        code = cli_main(["run", *QUICK, f"output_dir={out}", "name=x", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert fragment in err, (args, err)
        assert err.count("\n") == 1 and err.startswith("adaptlang: error: "), (args, err)
        assert not out.exists() or not any(out.iterdir()), f"{args} left a run directory behind"


def test_pretrained_needs_a_path(tmp_path, capsys):
    assert cli_main(["run", "model=pretrained", f"output_dir={tmp_path}"]) == 2
    assert "set model.name_or_path" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_existing_results_are_not_lost(tmp_path, capsys):
    out = tmp_path / "runs"
    (out / "x").mkdir(parents=True)
    (out / "x" / "metrics.json").write_text('{"precious": true}')
    code = cli_main(["run", *QUICK, f"output_dir={out}", "name=x"])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (out / "x" / "metrics.json").read_text() == '{"precious": true}'


def test_eval_bad_paths(tmp_path, capsys):
    assert cli_main(["eval", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["eval", "eval.benchmarks=[x]"]) == 2
    assert "needs a model path" in capsys.readouterr().err


def test_remote_code_is_off_by_default():
    assert load_config([]).model.trust_remote_code is False


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_override_parser_never_crashes(text):
    try:
        key, _ = parse_override(text)
    except UserError:
        return
    assert key and "=" in text


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=20), st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False),
                                                   st.booleans(), st.lists(st.integers(), max_size=3)))
def test_load_config_accepts_or_refuses_cleanly(key, value):
    try:
        load_config([f"{key}={value}"])
    except UserError as exc:
        assert "\n" not in str(exc)


def test_gzip_text_with_bad_bytes(tmp_path):
    from adaptlang.sources import read_text

    path = tmp_path / "x.txt.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"ok\n\xff\xfe broken\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_text(str(path))
