"""Language mixtures of text stages: target shares, realized tokens, budgets, replay (issue #28)."""
import dataclasses

import pytest
import yaml

from adaptlang import UserError, load_config
from adaptlang import text_budget
from adaptlang.data import ExampleStream, lm_examples, token_ids
from adaptlang.languages import CORPORA
from adaptlang.mixture import Mixture, MixedStream, parse_tokens, target_shares
from adaptlang.plan import make_plan
from adaptlang.report import lr_curves, mixture_lines
from adaptlang.schedules import lr_curve
from adaptlang.sources import text_dataset, text_for
from adaptlang.stage_runner import run_stage
from adaptlang.text_budget import text_size

from conftest import QUICK, make_model

FEW = [*QUICK, "strategy=none", "data.max_lines_per_language=40"]
PRETRAIN = "experiment.stages.0.data.languages=[en,ru,fi,sw]"


def test_target_shares_alpha_weights_and_replay():
    available = {"a": 900, "b": 100}
    assert target_shares(available, Mixture(alpha=1.0), ["a", "b"], []) == pytest.approx({"a": 0.9, "b": 0.1})
    assert target_shares(available, Mixture(alpha=0.0), ["a", "b"], []) == pytest.approx({"a": 0.5, "b": 0.5})
    half = target_shares(available, Mixture(alpha=0.5), ["a", "b"], [])
    assert half == pytest.approx({"a": 0.75, "b": 0.25})  # 30 : 10
    fixed = target_shares({**available, "c": 400}, Mixture(alpha=0.0, weights={"b": 0.5}), ["a", "b", "c"], [])
    assert fixed == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.25})
    every = target_shares(available, Mixture(weights={"a": 1, "b": 3}), ["a", "b"], [])
    assert every == pytest.approx({"a": 0.25, "b": 0.75})
    replayed = target_shares({**available, "old": 5, "older": 45}, Mixture(alpha=1.0, replay=0.1),
                             ["a", "b"], ["old", "older"])
    assert replayed == pytest.approx({"a": 0.81, "b": 0.09, "old": 0.01, "older": 0.09})


def _stream(n: int, tag: int, seed: int) -> ExampleStream:
    return ExampleStream([{"input_ids": [tag, i]} for i in range(n)], seed)


def _mixed(shares: dict) -> MixedStream:
    return MixedStream({c: _stream(5 + 3 * i, i, i) for i, c in enumerate(shares)}, shares)


def test_mixed_stream_realizes_shares_and_resumes_bit_exact():
    shares = {"a": 0.61, "b": 0.3, "c": 0.09}
    stream = _mixed(shares)
    for n in range(1, 400):
        next(stream)
        for code, share in shares.items():  # within one example of the target after every draw
            assert abs(stream.counts[code] - share * n) < 1 + 1e-9
    state = yaml.safe_load(yaml.safe_dump(stream.state_dict()))  # through text, as in a checkpoint
    ahead = [next(stream)["input_ids"] for _ in range(50)]
    resumed = _mixed(shares)
    resumed.load_state_dict(state)
    assert [next(resumed)["input_ids"] for _ in range(50)] == ahead
    assert resumed.realized()["epochs_by_language"]["a"] > 1  # short text repeated, epochs counted


def _plan(*args):
    return make_plan(load_config([*FEW, PRETRAIN, *args]))


def test_a_mixed_stage_trains_the_target_shares_within_two_points(tokenizer):
    plan = _plan("data.mixture.alpha=0.3", "train.max_steps=12")
    stage = plan.stage("pretrain")
    result = run_stage(stage, [], make_model(tokenizer), tokenizer, seed=0, languages=plan.languages,
                       config=plan.config)
    train = result.train
    assert set(train["tokens_by_language"]) == {"en", "ru", "fi", "sw"}
    assert sum(train["tokens_by_language"].values()) == train["tokens"] == 12 * 4 * 32
    total = train["tokens"]
    for code, target in train["target_shares"].items():
        assert abs(train["tokens_by_language"][code] / total - target) <= 0.02, code
    assert len(set(train["target_shares"].values())) > 1  # not uniform: alpha 0.3 of unequal texts
    shown = "\n".join(mixture_lines({"pretrain": {"train": train}}))
    en = train["target_shares"]["en"]
    assert f"| pretrain | en | {en:.2%} |" in shown


def test_an_unmixed_stage_records_the_tokens_each_language_got(tokenizer):
    # no mixture: en and sw text joined, blocks shuffled; the stage draws exactly two epochs
    plan = _plan("experiment.stages.0.data.languages=[en,sw]")
    stage = plan.stage("pretrain")
    assert stage.mixture is None or not stage.mixture.active
    texts, _ = text_for(["en", "sw"], plan.languages, plan.config)
    text_tokens = {c: sum(len(x) + 1 for x in token_ids(tokenizer, list(t["text"]))) for c, t in texts.items()}
    blocks = len(lm_examples([x for t in texts.values() for x in t["text"]], tokenizer, 32))
    stage = dataclasses.replace(stage, steps=2, train={**stage.train, "batch_size": blocks, "grad_accum": 1})
    result = run_stage(stage, [], make_model(tokenizer), tokenizer, seed=0, languages=plan.languages,
                       config=plan.config)
    train = result.train
    assert list(train["tokens_by_language"]) == ["en", "sw"]
    assert sum(train["tokens_by_language"].values()) == train["tokens"] == 2 * blocks * 32
    text_share = text_tokens["en"] / sum(text_tokens.values())
    assert text_tokens["en"] != text_tokens["sw"]
    assert train["realized_shares"]["en"] == pytest.approx(text_share, abs=0.02)  # two whole epochs: the text's share
    assert "target_shares" not in train
    shown = "\n".join(mixture_lines({"pretrain": {"train": train}}))
    assert f"| pretrain | sw | — | {train['realized_shares']['sw']:.2%} | {train['tokens_by_language']['sw']:,} | — |" in shown


def test_replay_of_past_languages_in_a_text_stage(tokenizer):
    plan = _plan("data.mixture.replay=0.25", "experiment.stages.1.data.languages=[fr,ja]", "train.max_steps=8")
    stage = plan.stage("adapt")
    assert stage.replay_languages == ("en", "ru", "fi", "sw")
    result = run_stage(stage, [], make_model(tokenizer), tokenizer, seed=0, languages=plan.languages,
                       config=plan.config)
    realized = result.train["tokens_by_language"]
    replayed = sum(realized[c] for c in ("en", "ru", "fi", "sw"))
    assert replayed / result.train["tokens"] == pytest.approx(0.25, abs=0.02)
    assert result.notes["replayed_languages"] == ["en", "ru", "fi", "sw"]
    assert "replayed languages" in yaml.safe_load(plan.describe())["stages"][1]["mixture"]


def test_a_token_budget_sets_the_steps_and_the_plan_prints_both():
    plan = _plan("train.max_steps=null", "experiment.stages.0.steps=null", "experiment.stages.0.tokens=1k")
    stage = plan.stage("pretrain")
    assert stage.tokens == 1000 and stage.steps == 8  # ceil(1000 / (4 x 32))
    shown = yaml.safe_load(plan.describe())["stages"][0]
    assert shown["steps"] == 8 and "budget 1,000" in shown["tokens"]
    assert parse_tokens("50M", "x") == 50_000_000 and parse_tokens("1.5B", "x") == 1_500_000_000


def test_uniform_shares_are_printed_by_the_plan():
    shown = yaml.safe_load(_plan("data.mixture.alpha=0").describe())["stages"][0]
    assert shown["target shares"] == {"en": 0.25, "ru": 0.25, "fi": 0.25, "sw": 0.25}


@pytest.mark.parametrize("args, message", [
    (["data.mixture.alpha=1.5"], "data.mixture.alpha=1.5: expected a number from 0 to 1"),
    (["data.mixture.alpha=-0.1"], "data.mixture.alpha=-0.1: expected a number from 0 to 1"),
    (["data.mixture.weights.ja=0.2"], "data.mixture.weights names ja, not among the stage's languages"),
    (["experiment.stages.0.data.mixture.weights={en: 0.7, ru: 0.6}"], "sum to 1.3 > 1"),
    (["data.mixture.replay=1"], "data.mixture.replay=1: expected a number from 0 to below 1"),
    (["experiment.stages.0.tokens=5M"], "give either steps or tokens, not both"),
    (["experiment.stages.0.steps=null", "experiment.stages.0.tokens=lots"], "expected a number of tokens"),
    (["experiment.stages.2.steps=null", "experiment.stages.2.tokens=1M"], "give steps for an instruction stage"),
    (["experiment.stages.0.data.mixture.alpah=0.3"], "data.mixture.alpah: unknown key"),
])
def test_bad_mixture_and_budget_input_is_one_line(args, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _plan(*args)


BEYOND = ["data.mixture.repeat=false", "train.max_steps=null", "experiment.stages.0.steps=null",
          "experiment.stages.0.tokens=1M"]


def test_a_budget_beyond_the_text_is_refused_by_the_plan():
    # 40 lines of en: a few thousand tokens, against a quarter of 1M
    with pytest.raises(UserError, match=r"^stage 'pretrain': language en has [\d,]+ tokens \(40 rows, [\d,]+ blocks "
                                        r"of 32\) but the stage's budget takes 250,\d+ of it \(25\.0% of 1,000,\d+\) "
                                        r"and data\.mixture\.repeat=false"):
        _plan("data.mixture.alpha=0", *BEYOND)
    with pytest.raises(UserError, match=r"^stage 'pretrain': data\.mixture\.repeat=false, but it needs 1,000,\d+ "
                                        r"tokens and its text \(en ru fi sw\) has [\d,]+ in blocks of 32"):
        _plan(*BEYOND)  # no mixture: one concatenated stream
    _plan("data.mixture.alpha=0", *BEYOND[:-1], "experiment.stages.0.tokens=1k")  # within the text: planned


def test_a_budget_beyond_the_text_is_refused_at_the_stage_start_too(tokenizer):
    plan = _plan("data.mixture.alpha=0", "data.mixture.repeat=false", "experiment.stages.0.steps=2")
    stage = dataclasses.replace(plan.stage("pretrain"), steps=10_000)  # past the plan's check
    with pytest.raises(UserError, match=r"language en needs [\d,]+ tokens .* data.mixture.repeat=false"):
        run_stage(stage, [], make_model(tokenizer), tokenizer, seed=0, languages=plan.languages, config=plan.config)


def test_the_plan_counts_a_texts_blocks_as_the_stage_cuts_them(tokenizer, monkeypatch):
    text = text_dataset(str(CORPORA / "ntrex128" / "eng-US.txt.gz"), 1500)
    exact = text_size(text, tokenizer, 32)
    assert exact.exact and exact.rows == 1500
    assert exact.blocks == len(lm_examples(text, tokenizer, 32))
    monkeypatch.setattr(text_budget, "EXACT_ROWS", 100)
    monkeypatch.setattr(text_budget, "SAMPLE_ROWS", 300)
    estimate = text_size(text, tokenizer, 32)
    assert not estimate.exact and estimate.chars == exact.chars
    assert abs(estimate.tokens - exact.tokens) < 0.05 * exact.tokens
    assert abs(estimate.blocks - exact.blocks) < 0.05 * exact.blocks


@pytest.mark.parametrize("name, shape", [
    ("wsd", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.293, 0.134]),  # 1 - sqrt over the last 4 (decay_ratio 0.4)
    ("constant_cooldown", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]),
])
def test_warmup_stable_decay_schedules(name, shape):
    curve = lr_curve({"lr": 2.0, "schedule": name, "warmup_ratio": 0.2, "decay_ratio": 0.4}, 10)
    assert [step for step, _ in curve] == list(range(1, 11))
    assert [lr for _, lr in curve] == pytest.approx([2 * x for x in shape], abs=1e-3)


def test_the_report_plots_every_stage_schedule_one_after_another(tmp_path):
    stages = {"a": {"train": {"steps": 10, "lr_by_step": lr_curve({"lr": 1.0, "schedule": "cosine", "warmup_ratio": 0.1}, 10)}},
              "b": {"train": {"steps": 5, "lr_by_step": lr_curve({"lr": 0.5, "schedule": "wsd", "warmup_ratio": 0.2}, 5)}}}
    curves = lr_curves(stages)
    assert curves["b"][0] == [11, 0.0] and curves["b"][1] == [12, 0.5]  # re-warmed after stage a
    assert len(lr_curve({"lr": 1.0, "schedule": "constant", "warmup_ratio": 0}, 100_000)) == 200


@pytest.mark.parametrize("mixture", [["data.mixture.alpha=0.5", "data.mixture.replay=0.2"], []],
                         ids=["mixed", "unmixed"])
def test_a_text_stage_resumes_mid_stream_bit_exact(tokenizer, tmp_path, mixture):
    import torch

    from adaptlang.checkpoint import Checkpointer
    from adaptlang.strategy import Strategy

    from conftest import bits

    class Crash(Strategy):
        name = "crash"

        def on_step_end(self, state):
            if state.step == 5:
                raise KeyboardInterrupt

    # 3 lines a language: the short texts are repeated, so the resume crosses epochs too
    plan = _plan(*mixture, "data.max_lines_per_language=3", "experiment.stages.1.data.languages=[fr,ja]",
                 "train.max_steps=8", "train.checkpoint_every=2")
    stage = plan.stage("adapt")

    def run(strategies, checkpointer=None):
        torch.manual_seed(0)
        return run_stage(stage, strategies, make_model(tokenizer), tokenizer, seed=0, languages=plan.languages,
                         config=plan.config, checkpointer=checkpointer)

    reference = run([])
    with pytest.raises(KeyboardInterrupt):
        run([Crash()], Checkpointer(tmp_path, 2))
    resumed = run([], Checkpointer(tmp_path, 2))
    if mixture:
        assert max(reference.train["epochs_by_language"].values()) > 1
    assert set(reference.train["tokens_by_language"]) >= {"fr", "ja"}
    assert resumed.train["tokens_by_language"] == reference.train["tokens_by_language"]
    for (name, a), (_, b) in zip(resumed.model.named_parameters(), reference.model.named_parameters()):
        assert bits(a) == bits(b), name
