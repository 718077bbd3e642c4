"""One CLI run with a handful of steps through every default stage, and the CLI's errors."""
import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import QUICK

pytestmark = pytest.mark.slow  # whole pipelines / several processes


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "adaptlang.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    result = cli("run", "strategy=af+replay", "strategy.af.every=2", "strategy.replay.size=6",
                 "name=e2e", *QUICK, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "e2e"


def test_run_directory_is_complete(finished_run):
    run = finished_run
    for name in ("config.yaml", "metrics.json", "report.md", "train.log", "status.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and list(metrics["stages"]) == ["pretrain", "adapt", "instruct"]
    assert metrics["stages"]["pretrain"]["strategies"] == ["af"]
    assert metrics["stages"]["pretrain"]["strategy_notes"]["af_resets"] == 1  # step 2 of 3
    assert metrics["stages"]["instruct"]["strategy_notes"]["replay_buffer_size"] == 6
    for stage in metrics["stages"].values():
        assert stage["train"]["steps"] == 3 and stage["train"]["tokens"] > 0
        ppl = stage["eval"]["perplexity"]
        assert set(ppl["classes"]) == {"pretraining", "adapting", "other", "overall"}
        assert ppl["languages"]["en"]["class"] == "pretraining"
        assert ppl["languages"]["se"]["source"].startswith("UDHR")
        for lang in ppl["languages"].values():
            assert lang["ppl_token"] > 1 and lang["bits_per_char"] > 0
    assert "se" in metrics["stages"]["adapt"]["strategy_notes"]["skipped_languages"]
    forgetting = metrics["forgetting"]  # change from the stage before adaptation, per class
    assert forgetting["baseline"] == "pretrain" and list(forgetting["deltas"]) == ["adapt", "instruct"]
    delta = forgetting["deltas"]["adapt"]["perplexity"]["pretraining"]["bits_per_char"]
    before = metrics["stages"]["pretrain"]["eval"]["perplexity"]["classes"]["pretraining"]["bits_per_char"]
    after = metrics["stages"]["adapt"]["eval"]["perplexity"]["classes"]["pretraining"]["bits_per_char"]
    assert delta == pytest.approx(after - before)
    report = (run / "report.md").read_text()
    assert "## Forgetting: change from stage `pretrain`" in report
    assert "[`stages/instruct/model`](stages/instruct/model)" in report and (run / "stages/instruct/model").is_dir()
    config = (run / "config.yaml").read_text()
    assert "every: 2" in config and "stages:\n    - pretrain" in config


def test_stage_models_load_with_plain_transformers(finished_run):
    path = finished_run / "stages" / "instruct" / "model"
    assert (path / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_existing_run_is_not_overwritten(finished_run):
    before = (finished_run / "metrics.json").read_bytes()
    result = cli("run", "name=e2e", *QUICK, cwd=finished_run.parent.parent)
    assert result.returncode == 2
    assert "already exists (status: complete)" in result.stderr and "overwrite=true" in result.stderr
    assert (finished_run / "metrics.json").read_bytes() == before


def test_rerun_from_resolved_config(finished_run, tmp_path):
    from adaptlang.config import load_config

    cfg = load_config(["name=again"], base=finished_run / "config.yaml")
    assert cfg.strategy.af.every == 2 and cfg.name == "again"


@pytest.mark.parametrize("args, fragment", [
    (["strategy=nope"], "unknown strategy 'nope'. Valid: af, "),
    (["train.lrr=0.1"], "Did you mean 'lr'?"),
    (["model.name_or_path=./no/such/model"], "does not exist"),
    (["experiment.stages.0.data.languages=[xx]"], "'xx' is neither a language class"),
])
def test_user_errors_exit_nonzero_with_one_line_and_no_run_directory(tmp_path, args, fragment):
    result = cli("run", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_python_api_composes_and_runs(tmp_path):
    import adaptlang

    cfg = adaptlang.load_config(["strategy=replay", f"output_dir={tmp_path}", "name=api", *QUICK])
    path = adaptlang.run(cfg, adaptlang.compose("replay", {"replay": {"size": 4}}))
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["strategies"] == ["replay"]
    assert metrics["stages"]["instruct"]["strategy_notes"]["replay_buffer_size"] == 4
