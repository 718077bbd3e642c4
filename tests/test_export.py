"""adaptlang export: a peft adapter of a vocabulary-grown model (LoRA + TrainableTokens +
modules_to_save, (IA)3, TrainableTokens on a tied model) merges into a plain checkpoint
that loads with AutoModelForCausalLM and gives the unmerged model's logits; a run's stage
exports as it is; every mistake is one line, exit code 2, and leaves no output folder."""
import json
import warnings

import pytest
import torch
from conftest import QUICK, make_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import adaptlang
from adaptlang.cli import main as cli_main
from adaptlang.config import to_yaml
from adaptlang.rundir import RunDir, write_atomic, write_json
from adaptlang.state_io import save_state

NEW_TOKENS = 12  # 600 + 12 tokens; the embeddings are padded to 616 rows (a multiple of 8)
PAD_TO = 8


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tokenizer):
    """Tiny base models (untied and tied head) saved as local folders, as a hub download would be."""
    root = tmp_path_factory.mktemp("bases")
    for tied in (False, True):
        folder = root / ("tied" if tied else "untied")
        make_model(tokenizer, tied=tied).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return root


def grown_adapter(base, folder, make_config):
    """Grow the base's vocabulary by NEW_TOKENS (embedding rows padded beyond the tokenizer, so
    that only the adapter's tensors say the size), wrap it in a peft adapter whose trainable
    tensors are perturbed (seeded) so that nothing is an identity, save it with the grown
    tokenizer; returns (peft model, probe ids that include new ids)."""
    from peft import get_peft_model

    tokenizer = AutoTokenizer.from_pretrained(base)
    old = len(tokenizer)
    tokenizer.add_tokens([f"<new{i}>" for i in range(NEW_TOKENS)])
    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=PAD_TO, mean_resizing=False)
    config = make_config(list(range(old, len(tokenizer))))
    config.base_model_name_or_path = str(base)
    model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: "embedding layer has been resized", saved with the adapter
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ids = torch.tensor([[5, 17, old, old + 3, 40, old + NEW_TOKENS - 1, 2, 9],
                        [old + i for i in range(8)]])
    return model.eval(), ids


def lora_tokens_head(new):
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", trainable_token_indices={"embed_tokens": new},
                      modules_to_save=["lm_head"])


def ia3(new):
    from peft import IA3Config

    return IA3Config()


def tokens(new):
    from peft import TrainableTokensConfig

    return TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=new)


def refused(capsys, args, fragment, out):
    capsys.readouterr()  # only what the command prints
    code = cli_main(["export", *args])
    err = capsys.readouterr().err
    assert code == 2, (args, err)
    assert fragment in err, (args, err)
    assert err.count("\n") == 1 and err.startswith("adaptlang: error: export"), (args, err)
    assert not out.exists() or not any(out.iterdir()), f"{args} left {out} behind"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name)) in ([], [out.name]), \
        f"{args} wrote beside --out"


@pytest.mark.parametrize("make_config, tied", [(lora_tokens_head, False), (ia3, False), (tokens, True)],
                         ids=["lora+tokens+head", "ia3", "tokens-tied"])
def test_a_grown_vocabulary_adapter_merges_into_a_plain_checkpoint_with_the_same_logits(
        bases, tmp_path, capsys, make_config, tied):
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = bases / ("tied" if tied else "untied")
    peft_model, ids = grown_adapter(base, tmp_path / "adapter", make_config)
    with torch.no_grad():
        unmerged = peft_model(ids).logits
    out = tmp_path / "merged"
    assert cli_main(["export", str(tmp_path / "adapter"), "--merge-adapters", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(v for v in info.values()), info
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert set(model.state_dict()) == set(type(model)(model.config).state_dict()), "not a plain checkpoint"
    old = len(AutoTokenizer.from_pretrained(base))
    rows = -(-(old + NEW_TOKENS) // PAD_TO) * PAD_TO
    assert rows > old + NEW_TOKENS
    assert model.get_input_embeddings().weight.shape[0] == model.config.vocab_size == rows
    assert len(AutoTokenizer.from_pretrained(out)) == old + NEW_TOKENS
    model.eval()
    with torch.no_grad():
        diff = (model(ids).logits - unmerged).abs().max().item()
    assert diff <= 1e-5, diff
    record = json.loads((out / "export.json").read_text())
    assert record["kind"] == "peft-adapter" and record["vocab_size"]["exported_rows"] == rows
    assert record["vocab_size"]["base_rows"] == old and record["probe"]["new_ids"] > 0
    assert record["max_abs_logit_diff"] <= 1e-5
    with torch.no_grad(), peft_model.disable_adapter():  # the adapter did something: the merge is not the base
        assert not torch.allclose(model(ids).logits, peft_model(ids).logits, atol=1e-3)
    assert not list(out.glob(".export-*")), "a temporary folder left in --out"


def test_an_adapter_without_its_grown_head_is_refused(bases, tmp_path, capsys):
    """peft saves a TrainableTokens adapter's grown input embedding but not the grown, untied
    LM head: its new head rows are lost, so no merge can give the trained model back."""
    grown_adapter(bases / "untied", tmp_path / "adapter", tokens)
    refused(capsys, [str(tmp_path / "adapter"), "--merge-adapters", "--out", str(tmp_path / "out")],
            "holds no lm_head matrix", tmp_path / "out")


def test_an_export_whose_logits_drift_is_refused_and_leaves_nothing(bases, tmp_path, capsys, monkeypatch):
    from adaptlang import export

    grown_adapter(bases / "untied", tmp_path / "adapter", lora_tokens_head)
    monkeypatch.setattr(export, "TOLERANCE", 0.0)  # float32 merging moves the logits by ~1e-7
    refused(capsys, [str(tmp_path / "adapter"), "--merge-adapters", "--out", str(tmp_path / "out")],
            "logits differ from the unmerged model's", tmp_path / "out")


@pytest.fixture
def interrupted_run(tmp_path, tokenizer):
    """A run killed in its second stage: 'pretrain' complete, 'adapt' not."""
    cfg = adaptlang.load_config(QUICK)
    run = RunDir.create(str(tmp_path / "runs"), "r")
    write_atomic(run.path / "config.yaml", to_yaml(cfg))
    run.save_model("pretrain", make_model(tokenizer), tokenizer)
    save_state(run.stage_dir("pretrain"), "strategies", {})
    write_json(run.path / "metrics.json", {"model": {"vocab_size": len(tokenizer)},
                                           "stages": {"pretrain": {"model_dir": "stages/pretrain/model"}}})
    (run.stage_dir("adapt") / "checkpoints").mkdir(parents=True)
    return run.path


def test_bad_inputs_are_one_line_and_leave_nothing(bases, interrupted_run, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    grown_adapter(bases / "untied", adapter, lora_tokens_head)
    moved = tmp_path / "moved"
    grown_adapter(bases / "untied", moved, ia3)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("precious")
    out = tmp_path / "out"
    run = str(interrupted_run)
    cases = [
        ([str(tmp_path / "missing"), "--out", str(out)], "does not exist"),
        ([str(adapter), "--out", str(out)], "pass --merge-adapters"),
        ([str(moved), "--merge-adapters", "--out", str(out)], "is not a local model folder and export never downloads"),
        ([str(adapter), "--merge-adapters", "--base", str(tmp_path / "gone"), "--out", str(out)],
         "not a local transformers model folder"),
        ([str(adapter), "--merge-adapters", "--stage", "adapt", "--out", str(out)], "--stage applies to a run"),
        ([run, "--out", str(out)], f"adaptlang resume {run}` first"),
        ([run, "--stage", "adpt", "--out", str(out)], "stage 'adpt' is not a stage of this run; completed stages: pretrain"),
        ([run, "--stage", "adapt", "--out", str(out)], "stage 'adapt' has not finished"),
        ([str(interrupted_run / "stages" / "pretrain" / "model"), "--out", str(out)], "is a transformers model folder"),
        ([str(tmp_path), "--out", str(out)], "neither a run folder"),
        ([run, "--stage", "pretrain"], "needs --out DIR"),
        ([str(adapter), "--merge-adapters", "--out", str(full)], "already exists and is not empty"),
    ]
    for args, fragment in cases:
        refused(capsys, args, fragment, out)
    assert (full / "keep.txt").read_text() == "precious" and len(list(full.iterdir())) == 1


def test_a_completed_stage_of_an_interrupted_run_exports_as_it_is(interrupted_run, tmp_path, capsys):
    out = tmp_path / "exported"
    out.mkdir()  # an empty folder is taken
    code = cli_main(["export", str(interrupted_run), "--stage", "pretrain", "--merge-adapters", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "merged at the stage end already" in captured.err and "stage 'pretrain'" in captured.out
    record = json.loads((out / "export.json").read_text())
    assert record["kind"] == "run" and record["stage"] == "pretrain" and record["max_abs_logit_diff"] == 0.0
    source = interrupted_run / "stages" / "pretrain" / "model"
    assert (out / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_finished_vocab_lora_run_exports_its_last_stage(tmp_path, capsys):
    cfg = adaptlang.load_config(["strategy=vocab+lora", f"output_dir={tmp_path}", "name=bl", *QUICK,
                                 "strategy.vocab.vocab_size=800", "strategy.vocab.fertility=none",
                                 "strategy.vocab.languages=fr", "strategy.vocab.protect=none", "eval.benchmarks=[]"])
    run = adaptlang.run(cfg)
    out = tmp_path / "exported"
    assert cli_main(["export", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    record = json.loads((out / "export.json").read_text())
    assert record["stage"] == "instruct" and record["max_abs_logit_diff"] == 0.0
    sizes = record["vocab_size"]
    assert sizes["exported_rows"] == sizes["tokenizer"] > sizes["run_start"], sizes
    assert record["probe"]["new_ids"] > 0
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(v for v in info.values()), info
    assert not any("lora_" in n or "trainable_tokens" in n for n in model.state_dict())
