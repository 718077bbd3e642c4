"""Run-folder safety without a whole run: names and paths confined, checkpoints that fall back
to the previous good one, stream positions checked, free space checked before a stage, the
block cache of killed runs swept (the faults that need a run are in test_faults.py)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from adaptlang import UserError
from adaptlang.checkpoint import MANIFEST, Checkpointer, sha256
from adaptlang.data import ExampleStream
from adaptlang.rundir import DiskFull, RunDir, check_space, confined, plain_name


# ---- names and paths ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a\nb", "tab\there", "x/../y", "..", "", "bell\x07"])
def test_names_that_are_not_plain_folder_names_are_refused(tmp_path, name):
    with pytest.raises(UserError) as info:
        RunDir.check_free(str(tmp_path), name)
    assert "\n" not in str(info.value) and "plain folder name" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_plain_names_pass():
    assert plain_name("af+replay-lr=1e-4-s0", "name") == "af+replay-lr=1e-4-s0"


def test_confined(tmp_path):
    assert confined(tmp_path, tmp_path / "a" / "b", "x") == tmp_path / "a" / "b"
    with pytest.raises(UserError, match="outside"):
        confined(tmp_path / "a", tmp_path / "a" / ".." / "b", "x")
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(UserError, match="outside"):
        confined(tmp_path, tmp_path / "link" / "etc", "x")


@pytest.mark.parametrize("line, what", [
    ('name: "x/../../escaped_grid"', "name"), ('name: "a\\nb"', "name"), ("runs: {\"a\\nb\": [strategy=mlm]}", "run label")])
def test_grid_names_are_confined(tmp_path, line, what):
    from adaptlang.grid import load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text(line + "\n" + ("" if line.startswith("runs") else "runs: {a: [strategy=mlm]}\n"))
    with pytest.raises(UserError, match=f"{what}=.*plain folder name"):
        load_grid(str(grid))


def test_plot_names_from_run_files_stay_in_the_plots_folder(tmp_path, monkeypatch):
    from adaptlang import compare_report

    monkeypatch.setattr(compare_report, "make_plots", lambda comp: {"delta-../../../evil-x": ("c", b"png")})
    monkeypatch.setattr(compare_report, "to_markdown", lambda *a: "")
    monkeypatch.setattr(compare_report, "to_html", lambda *a: "")
    compare_report.write({}, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out" / "plots").iterdir()] == ["delta-.._.._.._evil-x.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_writes_only_inside_out(tmp_path, monkeypatch):
    from adaptlang import export as export_module

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")

    def build(folder):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w")
        assert folder.parent == tmp_path / "deep" / "out"  # the work folder is inside --out
        return {"source": "x", "max_abs_logit_diff": 0.0}

    monkeypatch.setattr(export_module, "_from_run", lambda *a: build)
    export_module.export(str(run), str(tmp_path / "deep" / "out"))
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "deep" / "out").iterdir()) == ["export.json", "model.safetensors"]

    def broken(folder):
        folder.mkdir()
        raise RuntimeError("boom")

    monkeypatch.setattr(export_module, "_from_run", lambda *a: broken)
    with pytest.raises(RuntimeError):
        export_module.export(str(run), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


# ---- free space -----------------------------------------------------------------------------

def test_free_space_is_checked(tmp_path, monkeypatch):
    import shutil

    from adaptlang import rundir

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage._replace(free=3 * 2**20))
    check_space(tmp_path, 2 * 2**20, "stage 'x'")
    with pytest.raises(DiskFull) as info:
        check_space(tmp_path / "not" / "yet", 5 * 2**20, "stage 'x' (its model and a checkpoint)")
    assert "needs about 5.0 MB, 3.0 MB free" in str(info.value) and "stage 'x'" in str(info.value)


def test_a_stage_without_room_for_its_checkpoint_fails_before_training(tmp_path, monkeypatch):
    import shutil

    import adaptlang
    from adaptlang import rundir
    from conftest import QUICK

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage._replace(free=2**10))
    cfg = adaptlang.load_config([*QUICK, "train.checkpoint_every=1", "eval.benchmarks=[perplexity]",
                                 f"output_dir={tmp_path}", "name=r"])
    with pytest.raises(DiskFull, match=r"not enough free space for stage 'pretrain' \(its model and a checkpoint\)"):
        adaptlang.run(cfg)
    run = tmp_path / "r"
    assert json.loads((run / "status.json").read_text())["status"] == "failed"  # resumable once there is room
    assert not (run / "stages" / "pretrain" / "checkpoints").exists()


# ---- checkpoints: fallback and positions -----------------------------------------------------

def _opt(model):
    import torch

    opt = torch.optim.AdamW(model.parameters())
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def _stream(n=5):
    return ExampleStream([{"input_ids": [i]} for i in range(n)], seed=0)


def _two_checkpoints(tmp_path, model):
    opt, sched = _opt(model)
    stream = _stream()
    ck = Checkpointer(tmp_path / "ck", 1, "id")
    next(stream)
    ck.save(1, model, opt, sched, stream, [], {"tokens": 1})
    next(stream)
    ck.save(2, model, opt, sched, stream, [], {"tokens": 2})
    ck.save(3, model, opt, sched, stream, [], {"tokens": 3})
    assert sorted(p.name for p in (tmp_path / "ck").glob("step-*")) == ["step-000002", "step-000003"]
    return ck, opt, sched


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, model, caplog):
    ck, opt, sched = _two_checkpoints(tmp_path, model)
    (tmp_path / "ck" / "step-000003" / "rng.pt").write_bytes(b"garbage")
    stream = _stream()
    with caplog.at_level(logging.WARNING, logger="adaptlang"):
        resumed = ck.load(model, opt, sched, stream, [])
    assert resumed["step"] == 2 and resumed["tokens"] == 2 and stream.position == 2
    assert "rng.pt is damaged" in caplog.text and "previous good checkpoint" in caplog.text
    assert (tmp_path / "ck" / "latest").read_text().strip() == "step-000002"
    assert not (tmp_path / "ck" / "step-000003").exists()


def test_no_good_checkpoint_left_is_refused(tmp_path, model):
    ck, opt, sched = _two_checkpoints(tmp_path, model)
    for step in ("step-000002", "step-000003"):
        (tmp_path / "ck" / step / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"step-000003/optimizer.pt is damaged"):
        ck.load(model, opt, sched, _stream(), [])


def _edit_state(folder: Path, **changes):
    """Edit state.json and re-sign it in the manifest, as a careful hand would."""
    state = json.loads((folder / "state.json").read_text())
    state.update(changes)
    (folder / "state.json").write_text(json.dumps(state))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["state.json"] = sha256(folder / "state.json")
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("stream_state, why", [
    ({"epoch": 0, "position": 10**9}, "beyond the stream's 5 examples"),
    ({"epoch": -1, "position": 0}, "not counts"),
])
def test_stream_position_is_checked(tmp_path, model, stream_state, why):
    opt, sched = _opt(model)
    ck = Checkpointer(tmp_path / "ck", 1, "id")
    ck.save(1, model, opt, sched, _stream(), [], {"tokens": 0})
    folder = tmp_path / "ck" / "step-000001"
    _edit_state(folder, stream=stream_state)
    with pytest.raises(UserError, match="differs from the manifest"):  # the manifest recorded the stream
        ck.load(model, opt, sched, _stream(), [])
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["stream"] = stream_state
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=why):
        ck.load(model, opt, sched, _stream(), [])


# ---- the block cache of killed runs ----------------------------------------------------------

def test_block_cache_of_a_dead_run_is_swept(tmp_path):
    from adaptlang.tempdirs import OWNER, PREFIX, BlockCache

    dead = tmp_path / f"{PREFIX}dead"
    dead.mkdir()
    (dead / OWNER).write_text("123\n")  # its flock went with its process
    (dead / "blocks.arrow").write_bytes(b"x" * 100)
    living = BlockCache(tmp_path)  # sweeps on start
    assert not dead.exists() and Path(living.name).is_dir()
    other = BlockCache(tmp_path)  # a second run on the machine leaves the first one's folder alone
    assert Path(living.name).is_dir()
    other.cleanup()
    living.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_block_cache_is_removed_at_exit(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from adaptlang.tempdirs import BlockCache; c = BlockCache(sys.argv[1]); "
            "print(c.name); sys.exit(1)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout.strip().startswith(str(tmp_path)), proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---- user files and sizes, checked by the plan before training -------------------------------

def _plan(*overrides):
    import adaptlang
    from adaptlang.plan import make_plan

    return make_plan(adaptlang.load_config(list(overrides)))


def _one_line(*overrides) -> str:
    with pytest.raises(UserError) as info:
        _plan(*overrides)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz", "folder"])
def test_non_utf8_training_text_is_found_by_the_plan(tmp_path, name):
    import gzip

    data = b"hello\n" * 3 + b"caf\xe9\n"
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        (path / "a.txt").write_bytes(b"fine\n")
        (path / "b.txt").write_bytes(data)
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    error = _one_line(f"data.train_files.fr={path}")
    assert "data.train_files.fr" in error and "not UTF-8" in error and "line 4" in error and "byte 21" in error


def _instructions(tmp_path, rows, fields="alpaca"):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [f"data.instructions.mine={{path: {path}, fields: {fields}, language: en}}",
            "experiment.stages.2.data.sources=[mine]"]


def test_instruction_rows_are_checked_against_the_mapping(tmp_path):
    rows = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "", "output": 5}]
    error = _one_line(*_instructions(tmp_path, rows))
    assert "row 2" in error and "output: 5" in error and "must be text" in error
    rows = [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": "hello"}]
    assert "must be a list" in _one_line(*_instructions(tmp_path, rows, "chat"))


def test_optional_fields_are_optional(tmp_path):
    from adaptlang.instructions import files

    rows = [{"instruction": "say hi", "output": "hi"}, {"instruction": "say no", "output": "no"}]
    overrides = _instructions(tmp_path, rows)
    plan = _plan(*overrides)  # alpaca without `input`: accepted
    spec = files.check_spec("mine", {"path": str(tmp_path / "mine.jsonl"), "fields": "alpaca", "language": "en"})
    examples = files.read_source(spec, 0, {"with_input": "{instruction}\n{input}", "without_input": "{instruction}"})
    assert [e["target"] for e in examples] == ["hi", "no"] and plan.stages
    rows = [{"input": "x", "output": "hi"}]  # a required field missing is still refused
    assert "column(s) instruction not in" in _one_line(*_instructions(tmp_path, rows))


def test_model_sizes_are_checked(tmp_path):
    group = tmp_path / "m.yaml"
    group.write_text('name_or_path: null\narchitecture: mistral\nhidden_size: "abc"\nnum_hidden_layers: 2\n')
    assert "model: hidden_size='abc': expected a positive integer" in _one_line(f"model={group}")


def test_a_local_model_config_with_a_wrong_type_is_one_line(tmp_path, model, tokenizer):
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": "four"}))
    assert "config.json: num_attention_heads='four'" in _one_line(f"model.name_or_path={folder}")
    (folder / "config.json").write_text(json.dumps({**config, "rope_scaling": "yes"}))  # transformers' own check
    assert "config.json: Validation error for field" in _one_line(f"model.name_or_path={folder}")


def test_a_batch_that_cannot_fit_is_refused():
    from adaptlang.prechecks import check_batch_memory

    error = _one_line("train.batch_size=100000000")
    assert "train.batch_size=100000000" in error and "GiB" in error and "stage 'pretrain'" in error
    plan = _plan("train.batch_size=64")
    check_batch_memory(plan, (8 * 2**30, "free memory"))  # fits
    with pytest.raises(UserError, match="more than the 0.0 GiB of free memory"):
        check_batch_memory(plan, (2**20, "free memory"))


def test_run_and_stage_names_with_control_characters_are_refused():
    assert "control character '\\n'" in _one_line('name="a\\nb"')  # YAML's escape: a newline
    assert "experiment stage name='pre\\ttrain'" in _one_line('experiment.stages.0.name="pre\\ttrain"')


# ---- compare: malformed runs, repeated seeds, dropped figures -------------------------------

@pytest.mark.parametrize("damage, fragment", [
    (("config.yaml", "model: [unclosed\n"), "config.yaml: not a valid config"),
    (("config.yaml", "- just\n- a list\n"), "config.yaml: not a valid config (a mapping"),
    (("stages", {"instruct": [1, 2]}), "stages.instruct is list"),
    (("stages", {"instruct": {"eval": {"perplexity": {"classes": {"overall": 3.0}}}}}),
     "stages.instruct.eval.perplexity.classes.overall is float"),
    (("stages", {"instruct": {"eval": {"perplexity": {"classes": [1]}}}}), "eval.perplexity.classes is list"),
    (("seed", "zero"), "seed is str"),
])
def test_compare_refuses_malformed_runs_in_one_line(tmp_path, capsys, damage, fragment):
    from adaptlang.cli import main
    from test_compare import make_run, values

    good = make_run(tmp_path, "mlm-s0", ["mlm"], 0, values(10, 0, 0))
    bad = make_run(tmp_path, "af-s0", ["af"], 0, values(10, 0, 1))
    key, value = damage
    if key == "config.yaml":
        (bad / key).write_text(value)
    else:
        metrics = json.loads((bad / "metrics.json").read_text())
        (bad / "metrics.json").write_text(json.dumps({**metrics, key: value}))
    capsys.readouterr()
    assert main(["compare", str(good), str(bad), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "af-s0" in err[0], err
    assert not (tmp_path / "c").exists()


def test_compare_warns_of_repeated_seeds_and_dropped_figures(tmp_path):
    from adaptlang.compare import build
    from test_compare import make_run, values

    runs = [make_run(tmp_path, f"af-{i}", ["af"], 0, values(10, 0, i)) for i in range(3)]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    metrics["stages"]["instruct"]["eval"]["perplexity"]["classes"]["overall"]["ppl_token"] = "12.5"
    (runs[0] / "metrics.json").write_text(json.dumps(metrics))
    warnings = build(runs)["warnings"]
    assert any("share seeds (seeds 0, 0, 0)" in w for w in warnings), warnings
    assert any("non-numeric figures left out" in w and "perplexity ppl_token (af-0: '12.5')" in w
               for w in warnings), warnings
    assert build(runs[1:2])["warnings"] == []
