"""Trained checkpoints: the defaults they get (experiment=pretrained, strategy=vocab+replay),
the starting model evaluated as stage ``base``, af warned about, chat templates asked for,
GGUF files and memory checked before loading (issue #27). A tiny llama checkpoint stands in
for a real one here; tests/test_real_checkpoint.py runs SmolLM2 itself."""
from __future__ import annotations

import json

import pytest

import adaptlang
from adaptlang import load_config, make_plan
from adaptlang.errors import UserError
from adaptlang.models import check_fits_memory
from adaptlang import named_models

from conftest import QUICK
from families import build_family

RUN = [q for q in QUICK if not q.startswith("model.")]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_family("llama", tmp_path_factory.mktemp("trained") / "llama")


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory):
    return build_family("phi3", tmp_path_factory.mktemp("trained") / "phi3")


def trained(path, *extra):
    return load_config(["model=pretrained", f"model.name_or_path={path}", *extra])


def test_a_trained_checkpoint_gets_adapt_then_instruct_with_vocab_and_replay(llama_dir):
    plan = make_plan(trained(llama_dir))
    assert [s.name for s in plan.stages] == ["adapt", "instruct"]
    assert sorted(s.name for s in plan.strategies) == ["replay", "vocab"]
    assert plan.evaluates_base
    shown = plan.to_dict()
    assert shown["model"].startswith("trained checkpoint") and "no from-scratch" in shown["experiment"]
    adapt = plan.stage("adapt")
    assert adapt.train["lr"] == pytest.approx(2e-5) and adapt.train["embedding_lr_ratio"] == pytest.approx(250)
    assert plan.strategy("vocab").options["head"] == "new" and plan.strategy("vocab").options["body"] == "full"


def test_the_command_line_still_chooses(llama_dir):
    plan = make_plan(trained(llama_dir, "experiment=default", "strategy=af+replay", "train.lr=1e-4"))
    assert [s.name for s in plan.stages] == ["pretrain", "adapt", "instruct"]
    assert plan.stage("pretrain").train["lr"] == pytest.approx(1e-4)
    assert len(plan.warnings) == 1 and "active forgetting is a pretraining method" in plan.warnings[0]
    assert "warnings" in plan.to_dict()
    # the from-scratch default has none of this
    tiny = make_plan(load_config([]))
    assert not tiny.warnings and not tiny.evaluates_base and [s.name for s in tiny.stages][0] == "pretrain"


def test_default_stages_fit_the_experiment_but_given_stages_are_kept(llama_dir):
    cfg = trained(llama_dir, "strategy=vocab+lwf")
    assert list(cfg.strategy.lwf.stages) == ["adapt", "instruct"]  # default [pretrain, adapt, instruct]
    with pytest.raises(UserError, match="unknown stage 'pretrain'"):
        make_plan(trained(llama_dir, "strategy=replay", "strategy.replay.stages=[pretrain,instruct]"))
    with pytest.raises(UserError, match="unknown stage 'pretrain'"):  # af acts only in pretraining
        make_plan(trained(llama_dir, "strategy=af"))


def test_eval_base_setting_and_a_stage_named_base():
    assert make_plan(load_config(["eval.base=true"])).evaluates_base
    assert not make_plan(load_config(["eval.base=false"])).evaluates_base
    with pytest.raises(UserError, match="expected one of"):
        load_config(["eval.base=sometimes"])
    with pytest.raises(UserError, match="named 'base'"):
        make_plan(load_config(["eval.base=true", "experiment.stages.0.name=base", "strategy.af.stages=[adapt]"]))


def test_chat_template_true_needs_a_tokenizer_with_one(llama_dir, phi3_dir):
    with pytest.raises(UserError, match="no chat template"):
        make_plan(load_config(["data.chat_template=true"]))  # a tokenizer trained from scratch
    with pytest.raises(UserError, match="no chat template"):
        make_plan(trained(llama_dir, "data.chat_template=true"))
    make_plan(trained(phi3_dir, "data.chat_template=true"))
    make_plan(trained(llama_dir, "data.chat_template=auto"))
    assert load_config(["data.chat_template=false"]).data.chat_template == "false"


def test_a_model_too_large_for_memory_is_refused_before_loading(llama_dir):
    check_fits_memory(str(llama_dir), available=2**40)
    with pytest.raises(UserError, match=r"parameters need about .* GiB"):
        check_fits_memory(str(llama_dir), available=1000)


def test_gguf_files(tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    monkeypatch.setenv("ADAPTLANG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="does not exist"):
        named_models.resolve(str(tmp_path / "missing.gguf"))
    writer = gguf.GGUFWriter(str(tmp_path / "encoder.gguf"), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 4), dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="cannot dequantise this GGUF file"):
        named_models.resolve(str(tmp_path / "encoder.gguf"))
    assert not any((tmp_path / "cache" / "gguf").glob("encoder-*"))  # nothing half-written left to load


def test_named_checkpoint_refuses_offline_without_its_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLANG_CACHE", str(tmp_path))
    monkeypatch.setenv("ADAPTLANG_OFFLINE", "1")
    monkeypatch.setattr(named_models, "_installed_file", lambda spec: None)
    with pytest.raises(UserError, match="ADAPTLANG_OFFLINE=1"):
        named_models.resolve("smollm2-135m")


@pytest.mark.slow
def test_the_starting_model_is_stage_base_and_forgetting_is_measured_from_it(tmp_path):
    cfg = load_config(["eval.base=true", *RUN, *[q for q in QUICK if q.startswith("model.")],
                       f"output_dir={tmp_path}", "name=b", "strategy=replay"])
    path = adaptlang.run(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    assert list(metrics["stages"]) == ["base", "pretrain", "adapt", "instruct"]
    assert metrics["stages"]["base"]["starting_model"] and metrics["stages"]["base"]["eval"]["perplexity"]
    assert metrics["forgetting"]["baseline"] == "base"
    assert set(metrics["forgetting"]["deltas"]) == {"pretrain", "adapt", "instruct"}
    report = (path / "report.md").read_text()
    assert "| base | the starting model" in report and "change from stage `base`" in report
    from adaptlang.compare import build

    comp = build([path])
    change = comp["from_base"]["perplexity"]["bits_per_char"]["b"]["overall"]["mean"]
    final = metrics["stages"]["instruct"]["eval"]["perplexity"]["classes"]["overall"]["bits_per_char"]
    start = metrics["stages"]["base"]["eval"]["perplexity"]["classes"]["overall"]["bits_per_char"]
    assert change == pytest.approx(final - start)
    # a resume keeps the base entry (it has no model folder of its own)
    from adaptlang.rundir import RunDir

    assert "base" in RunDir(path).completed_stages()
