"""Issue 16: the papers' real settings. Language status from the language set (IA Figure 2:
pretrained / seen / unseen), ia_paper as the paper, the LR schedule switch, instruction
data from the user's files, the authors' prompt formats."""
import pytest
from omegaconf import OmegaConf

from adaptlang import UserError
from adaptlang.benchmarks import classify
from adaptlang.config import load_config
from adaptlang.languages import LanguageSet
from adaptlang.plan import make_plan

SEEN = ["ace", "ban", "bjn", "bug", "jav", "min", "sun"]


def statuses(*overrides):
    cfg = load_config(list(overrides))
    status, rule = classify.language_status(cfg, LanguageSet.from_config(cfg.languages))
    by: dict[str, list[str]] = {}
    for code in ["en", "id", *SEEN, "mad", "nij", "bbc"]:
        by.setdefault(status.get(code, "unseen"), []).append(code)
    return by, rule


@pytest.mark.parametrize("experiment", ["ia_paper", "ia"])
def test_nusax_status_comes_from_the_language_set(experiment):
    by, rule = statuses(f"experiment={experiment}", "languages=nusax")
    assert by == {"pretrained": ["en", "id"], "seen": SEEN, "unseen": ["mad", "nij", "bbc"]}
    assert "base" in rule


def test_explicit_pretrained_languages_win():
    by, _ = statuses("experiment=ia_paper", "languages=nusax", "eval.classify.pretrained_languages=[en]")
    assert by["pretrained"] == ["en"] and "id" in by["unseen"]


def test_set_without_base_falls_back_to_the_first_stage():
    langs = LanguageSet({"known": ["en", "id"], "new": ["jav"]})
    cfg = OmegaConf.create({"eval": {"classify": {}}, "experiment": {"stages": [
        {"name": "a", "data": {"languages": "known"}}, {"name": "b", "data": {"languages": "new"}}]}})
    status, rule = classify.language_status(cfg, langs)
    assert status == {"en": "pretrained", "id": "pretrained", "jav": "seen"} and "first stage" in rule


def test_base_may_name_a_class():
    assert LanguageSet({"old": ["en", "id"], "new": ["jav"]}, base="old").base == ["en", "id"]


def test_unknown_base_language_is_refused_in_the_plan():
    with pytest.raises(UserError, match="unknown language code 'xx'.*base"):
        make_plan(load_config(["languages=nusax", "experiment=ia_paper", "languages.base=[en,xx]"]))


# ---- ia_paper as the paper; the schedule switch ----------------------------------------------


def test_ia_paper_is_the_paper():
    cfg = load_config(["experiment=ia_paper", "languages=nusax", "strategy=xling+replay"])
    plan = make_plan(cfg)
    assert plan.stages[0].train["schedule"] == "linear" and plan.stages[0].train["warmup_ratio"] == 0.0
    assert cfg.strategy.xling.bitext == ["flores"] and cfg.strategy.xling.known == ["en", "id"]
    assert cfg.eval.classify.max_examples is None and list(cfg.eval.benchmarks) == ["nusax", "nusawrites"]
    # the command line still wins over the experiment's settings
    cfg = load_config(["experiment=ia_paper", "languages=nusax", "strategy=mlm", "train.schedule=constant"])
    assert cfg.train.schedule == "constant" and "xling" not in cfg.strategy
    assert load_config(["experiment=paper"]).train.schedule == "cosine"


def test_xling_default_bitext_is_flores_only():
    from adaptlang.composition import strategy_defaults
    assert strategy_defaults("xling")["bitext"] == ["flores"]


@pytest.mark.parametrize("name, at_half, at_end", [("linear", 0.5, 0.0), ("cosine", 0.5, 0.0), ("constant", 1.0, 1.0)])
def test_schedules(name, at_half, at_end):
    import torch
    from adaptlang.schedules import make_scheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, name, 0, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(at_half) and opt.param_groups[0]["lr"] == pytest.approx(at_end)
    if name == "linear":
        assert lrs[2] == pytest.approx(0.8)


def test_unknown_schedule_is_refused_in_the_plan():
    with pytest.raises(UserError, match="train.schedule=cosin.*Valid: constant, constant_cooldown, cosine, linear, wsd"):
        make_plan(load_config(["train.schedule=cosin"]))


# ---- prompt formats ---------------------------------------------------------------------------


def test_nusax_default_prompts_are_the_authors_with_options_listed():
    from adaptlang.benchmarks import BENCHMARKS
    task = classify.load_task(classify.TASKS_DIR / "nusax.yaml")
    assert [p["lang"] for p in task.prompts] == ["en"] * 3 + ["id"] * 3
    for p in task.prompts:
        words = task.label_words[p["lang"]]
        assert all(words[label] in p["template"] for label in task.labels)  # unquoted (test_ia_tables.py)
        assert ("or" if p["lang"] == "en" else "atau") in p["template"]
    assert "nusax_adaptlang" in BENCHMARKS


def test_authors_xling_templates_and_loss_on_prompt(tokenizer):
    from adaptlang.instructions import encode
    from adaptlang.instructions.xling import XlingOptions, generate
    langs = LanguageSet.from_config(load_config(["languages=nusax"]).languages)
    opts = XlingOptions.defaults(templates="xling_authors", prompt_languages=["en"], known=["en"], max_pairs=12,
                                 objectives=["word", "span", "sentence", "monolingual"], loss_on_prompt=True)
    examples, _ = generate(["jav"], langs, opts, seed=0)
    assert {e["template_id"][:4] for e in examples} == {"cd-a", "mt-a", "md-a"}
    assert any("Javanese" in e["prompt"] for e in examples) and any("Javanese" not in e["prompt"] for e in examples)
    for e in examples:
        assert e["target"].strip() == e["target_text"]
        assert e["target"] == (e["target_text"] if e["prompt"].endswith("\n") else " " + e["target_text"])
    ex = examples[0]
    whole, answer = encode(ex, tokenizer, 4096, loss_on_prompt=True), encode(ex, tokenizer, 4096)
    assert whole["input_ids"] == answer["input_ids"]
    assert whole["labels"][0] == -100 and whole["labels"][1:] == whole["input_ids"][1:]
    n_prompt = len(tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"])
    assert answer["labels"][: 1 + n_prompt] == [-100] * (1 + n_prompt)


# ---- instruction data from the user's files ---------------------------------------------------


def write_shapes(tmp_path):
    """One small local source per shape; returns name -> (spec, rows)."""
    import json

    import pandas as pd

    rows = 6
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"Say {i}.", "input": "" if i % 2 else "now",
                                          "output": f"{i}"}) + "\n" for i in range(rows)), encoding="utf-8")
    pd.DataFrame({"inputs": [f"Translate {i} to French:" for i in range(rows)], "targets": [f"fr{i}" for i in range(rows)],
                  "lang": ["fr", "en"] * (rows // 2)}).to_csv(tmp_path / "xp3.csv", index=False)
    pd.DataFrame({"id": range(rows), "system_prompt": ["Be brief."] * rows,
                  "question": [f"q{i}?" for i in range(rows)], "response": [f"r{i}" for i in range(rows)]}
                 ).to_parquet(tmp_path / "orca.parquet")
    chat = tmp_path / "chat"
    chat.mkdir()
    (chat / "part-0.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}) + "\n"
        for i in range(rows)), encoding="utf-8")
    return {
        "alp": {"path": str(alpaca), "fields": "alpaca", "language": "en"},
        "xp3": {"path": str(tmp_path / "xp3.csv"), "fields": "xp3", "language_field": "lang"},
        "orca": {"path": str(tmp_path / "orca.parquet"), "fields": "openorca", "language": "en"},
        "chat": {"path": str(chat), "fields": "chat", "language": "en"},
    }, rows


def test_instruction_sources_from_files_in_each_shape(tmp_path):
    from adaptlang import instructions
    specs, rows = write_shapes(tmp_path)
    cfg = OmegaConf.create({"data": {"instructions": specs}})
    got = {name: instructions.build(name, ["en"], cfg, seed=0) for name in specs}
    assert all(len(v) == rows for v in got.values())
    assert got["alp"][0]["prompt"].startswith("### Instruction:\nSay 0.") and got["alp"][0]["target"] == "0"
    assert got["xp3"][1] | {} and got["xp3"][1]["prompt"] == "Translate 1 to French:" and got["xp3"][1]["target"] == " fr1"
    assert [e["target_language"] for e in got["xp3"][:2]] == ["fr", "en"]
    assert got["orca"][2]["prompt"] == "Be brief.\n\nq2?\n" and got["orca"][2]["target"] == "r2"
    assert {e["prompt"] for e in got["chat"]} == {f"user: hi {i}\nassistant:" for i in range(rows)}
    assert all(e["origin"] == name for name, v in got.items() for e in v)


def test_replay_samples_r_from_a_file_source_and_says_when_r_is_too_large(tmp_path, tokenizer, caplog):
    from adaptlang.composition import build_strategy
    from adaptlang.data import ExampleStream
    from adaptlang.strategy import StageContext
    specs, rows = write_shapes(tmp_path)
    cfg = OmegaConf.create({"data": {"instructions": specs}})
    ctx = StageContext(name="instruct", index=0, seed=1, train=OmegaConf.create({"batch_size": 4, "max_length": 64}),
                       config=cfg, tokenizer=tokenizer)
    new = ExampleStream([{"input_ids": [5, i], "labels": [5, i]} for i in range(20)], seed=0)
    replay = build_strategy("replay", size=4, source="orca")
    replay.setup_data(new, ctx)
    assert len(replay.buffer_ids) == 4 and ctx.notes["replay_past_available"] == rows
    big = build_strategy("replay", size=100, source="xp3")
    with caplog.at_level("WARNING", logger="adaptlang"):
        big.setup_data(new, ctx)
    assert len(big.buffer_ids) == rows and "strategy.replay.size=100 but source 'xp3' has 6 examples" in caplog.text


def test_bad_instruction_sources_are_refused_in_the_plan(tmp_path):
    specs, _ = write_shapes(tmp_path)
    base = ["strategy=replay", f"data.instructions.orca={{path: {specs['orca']['path']}, language: en, "
                               "fields: {question: query, response: response}}", "strategy.replay.source=orca"]
    with pytest.raises(UserError, match=r"column\(s\) query not in .*columns found: id, question, response, system_prompt"):
        make_plan(load_config(base))
    with pytest.raises(UserError, match="unknown instruction source 'orka'"):
        make_plan(load_config(base[:2] + ["strategy.replay.source=orka"]))
    with pytest.raises(UserError, match="not one shape"):
        make_plan(load_config(["strategy=replay", f"data.instructions.m={{path: {specs['alp']['path']}, "
                               "language: en, fields: {instruction: instruction, targets: output}}",
                               "strategy.replay.source=m"]))
    with pytest.raises(UserError, match="strategy.replay.size=-3: must be >= 0"):
        make_plan(load_config(["strategy=replay", "strategy.replay.size=-3"]))


# ---- masks re-drawn each time an example is used -----------------------------------------------


@pytest.mark.parametrize("name, options", [("xling", {"max_pairs": 3, "objectives": ["word"]}),
                                           ("mlm", {"max_sentences": 3, "text": ["flores"]})])
@pytest.mark.parametrize("on", [True, False])
def test_masks_are_redrawn_after_the_first_epoch(tokenizer, name, options, on):
    from adaptlang.composition import build_strategy
    from conftest import stage_ctx
    cfg = load_config(["languages=nusax", f"strategy={name}"])
    ctx = stage_ctx("instruct", config=cfg, tokenizer=tokenizer, train={"max_length": 512}, stage_languages=["jav"])
    stream = build_strategy(name, redraw=on, **options).setup_data(None, ctx)
    n = len(stream)
    first = [list(next(stream)["input_ids"]) for _ in range(n)]
    state = stream.state_dict()
    second = [list(next(stream)["input_ids"]) for _ in range(n)]
    assert (sorted(first) != sorted(second)) == on  # the same sentences, other words removed (or the same examples)
    stream.load_state_dict(state)
    assert [list(next(stream)["input_ids"]) for _ in range(n)] == second  # resumable exactly


def test_streamed_source_reads_r_rows_after_a_seeded_shuffle(tmp_path):
    from adaptlang import instructions
    specs, rows = write_shapes(tmp_path)
    cfg = OmegaConf.create({"data": {"instructions": {"s": {**specs["alp"], "streaming": True}}}})
    a = instructions.build("s", ["en"], cfg, seed=0, limit=4)
    assert len(a) == 4 and a == instructions.build("s", ["en"], cfg, seed=0, limit=4)
    cfg.data.instructions.s.max_rows = 2
    assert len(instructions.build("s", ["en"], cfg, seed=0, limit=4)) == 2


def test_zero_shot_baseline_is_grouped_like_the_runs_it_is_compared_with():
    by, rule = statuses("experiment=ia_zeroshot", "languages=nusax")
    assert by == {"pretrained": ["en", "id"], "seen": SEEN, "unseen": ["mad", "nij", "bbc"]}
    assert "seen_languages" in rule


def test_status_overrides_are_checked_in_the_plan():
    with pytest.raises(UserError, match="eval.classify.seen_languages: 'seen' is neither a language class"):
        make_plan(load_config(["experiment=ia_zeroshot", "strategy=none"]))  # languages=papers has no class 'seen'
    make_plan(load_config(["experiment=ia_zeroshot", "strategy=none", "languages=nusax"]))
