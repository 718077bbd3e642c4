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
        ([f"data.train_files.ar={bad_jsonl}"], "bad.jsonl:2: not a JSON line"),
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
        (["strategy=xling", "strategy.xling.max_pairs=abc"],
         "strategy.xling.max_pairs='abc': expected an integer >= 1 (or null: all)"),
        (["experiment.stages.1.train.lr=1", "train.batch_size=0"], "train.batch_size=0: expected an integer >= 1"),
        # values: keys whose default is null are checked too, and ranges, before the plan
        (["train.max_steps=abc"], "train.max_steps='abc': expected"),
        (["train.max_steps=0"], "train.max_steps=0: expected an integer >= 1"),
        (["train.max_steps=-3"], "train.max_steps=-3: expected an integer >= 1"),
        (["train.max_steps=true"], "train.max_steps=True: expected"),
        (["train.grad_accum=0"], "train.grad_accum=0: expected an integer >= 1"),
        (["train.lr=-1"], "train.lr=-1: expected a number >= 0"),
        (["train.lr=.nan"], "train.lr=nan: expected a number >= 0"),
        (["train.block_size=0"], "train.block_size=0: expected an integer >= 2"),
        (["train.warmup_ratio=2"], "train.warmup_ratio=2: expected a number from 0 to 1"),
        (["seed=1.5"], "seed=1.5: expected an integer"),
        (["mixed_precision=fp8"], "mixed_precision='fp8': expected one of bf16, fp16, no"),
        (["device=gpu"], "device='gpu': expected one of auto, cpu"),
        (["eval.max_sentences=0"], "eval.max_sentences=0: expected an integer >= 1 (or null: all)"),
        (["eval.benchmarks=perplexity"], "eval.benchmarks='perplexity': expected a list (like [perplexity])"),
        (["name=[a]"], "name=['a']: expected"),
        (["strategy=mlm", "strategy.mlm.max_sentences=abc"], "strategy.mlm.max_sentences='abc': expected an integer"),
        (["experiment.stages.0.steps=abc"], "experiment.stages.0.steps='abc': expected a number"),
        (["experiment.stages.0.train.lr=-1"], "experiment.stages.0.train.lr=-1: expected a number >= 0"),
        # found by the plan, not after the stages before them have trained
        (["strategy=xling", "strategy.xling.known=[zz]"], "unknown language code 'zz' in strategy.xling.known"),
        ([f"data.train_files.fr={tmp_path / 'missing.txt'}"], "data.train_files.fr: text source"),
        ([f"data.eval_files.fr={tmp_path / 'missing.txt'}"], "data.eval_files.fr: text source"),
        ([f"output_dir={empty}"], "a file is in the way"),
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


def test_partial_config_files_and_experiments_are_refused(tmp_path, capsys):
    partial = write(tmp_path / "partial.yaml", b"train: {lrr: 1}\n")
    no_stages = write(tmp_path / "exp.yaml", b"foo: 1\n")
    assert cli_main(["config", "--config", partial]) == 2
    assert "not a complete config (no data, device" in capsys.readouterr().err
    assert cli_main(["config", f"experiment={no_stages}"]) == 2
    assert "needs a 'stages' list" in capsys.readouterr().err


def test_numbers_in_exponent_form_and_integral_floats():
    cfg = load_config(["train.lr=3E-5", "train.max_steps=20.0", "strategy=ewc", "strategy.ewc.ewc_lambda=1e4"])
    assert cfg.train.lr == 3e-5 and cfg.train.max_steps == 20 and isinstance(cfg.train.max_steps, int)
    assert cfg.strategy.ewc.ewc_lambda == 1e4
    for name in ("2024", "1e5", "0.001", "2024-01-01"):  # a run name stays as typed
        assert load_config([f"name={name}"]).name == name
    assert load_config(["mixed_precision=no"]).mixed_precision == "no"  # YAML 1.1 reads `no` as false


def test_numbers_in_exponent_form_in_yaml_files(tmp_path):
    exp = write(tmp_path / "exp.yaml", b"stages:\n  - {name: s, data: {kind: text, languages: [en]}, steps: 2,"
                                      b" train: {lr: 1e-4, eps: 1e-6}}\n")
    cfg = load_config([f"experiment={exp}", "strategy=none"])
    assert cfg.experiment.stages[0].train.lr == 1e-4 and cfg.experiment.stages[0].train.eps == 1e-6
    inline = load_config(["experiment={stages: [{name: s, data: {kind: text}, steps: 2}]}", "strategy=none"])
    assert [s.name for s in inline.experiment.stages] == ["s"]


def test_options_of_other_commands_are_refused(capsys):
    for argv, fragment in ((["run", "--limit", "3"], "--limit is not an option of `adaptlang run`"),
                           (["compare", "x", "--merge-adapters"], "--merge-adapters is not an option of"),
                           (["resume", "runs/x", "--config", "c.yaml"], "(it takes no options)"),
                           (["strategies", "extra"], "takes no arguments")):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, (argv, err)


def test_the_plan_checks_values_changed_in_python_after_loading():
    from adaptlang.plan import make_plan

    cfg = load_config(QUICK)
    cfg.experiment.stages[0].steps = 0
    with pytest.raises(UserError, match="experiment.stages.0.steps=0: expected an integer >= 1"):
        make_plan(cfg)


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
