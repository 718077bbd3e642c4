"""replay buffer policies: random (IA), reservoir (carried across stages), balanced per group:
sizes, balance, determinism, and composition with xling."""
import json
import random
from collections import Counter

import pytest
from omegaconf import OmegaConf

from adaptlang.composition import build_strategy
from adaptlang import UserError, instructions, load_config
from adaptlang.data import ExampleStream
from adaptlang.languages import LanguageSet
from adaptlang.strategies.replay.buffer import Reservoir, balanced_ids, group_of
from adaptlang.strategies.replay import InterleavedStream
from adaptlang.composition import compose
from adaptlang.seeds import derive_seed
from adaptlang.strategy import StageContext

GSM, SELF = "en/gsm8k_train_2000", "en/self_instruct_seed_tasks"


@pytest.fixture(scope="module")
def past():
    return instructions.build("english", ["en"], OmegaConf.create({}), 0)


def stage_ctx(tokenizer, index=2, name="instruct", seed=1, cfg=None, languages=None, stage_languages="all"):
    train = OmegaConf.create({"batch_size": 8, "max_length": 64})
    codes = languages.resolve(stage_languages) if languages is not None else []
    return StageContext(name=name, index=index, seed=seed, train=train, config=cfg or OmegaConf.create({}),
                        languages=languages, stage_languages=codes, tokenizer=tokenizer)


def new_stream(n=50, tag=0):
    return ExampleStream([{"input_ids": [7, tag, i], "labels": [7, tag, i], "kind": "new"} for i in range(n)], seed=0)


def test_past_examples_carry_their_group(past):
    counts = Counter(group_of(e, ["target_language", "origin"]) for e in past)
    assert counts == {GSM: 2000, SELF: 175}


def test_random_policy_is_the_ia_sample(tokenizer, past):
    replay = build_strategy("replay", size=100)
    replay.setup_data(new_stream(), stage_ctx(tokenizer))
    seed = derive_seed(1, "instruct", "replay.buffer")  # the run seed, the stage, the purpose
    expected = sorted(random.Random(seed).sample(range(len(past)), 100))  # IA 3.2: a seeded random sample
    assert replay.buffer_ids == expected


@pytest.mark.parametrize("r, gsm, self_", [(100, 50, 50), (101, 51, 50), (300, 150, 150), (1000, 825, 175),
                                           (5000, 2000, 175)])
def test_balanced_policy_sizes_and_shares(tokenizer, past, r, gsm, self_):
    replay = build_strategy("replay", size=r, policy="balanced")
    ctx = stage_ctx(tokenizer)
    replay.setup_data(new_stream(), ctx)
    groups = Counter(group_of(past[i], ["target_language", "origin"]) for i in replay.buffer_ids)
    assert groups == {GSM: gsm, SELF: self_}  # self-instruct has 175: beyond that GSM8K takes the rest
    assert ctx.notes["replay_groups"] == dict(groups) and ctx.notes["replay_buffer_size"] == gsm + self_
    assert len(set(replay.buffer_ids)) == len(replay.buffer_ids)


def test_balanced_ids_max_min_fair_and_deterministic():
    groups = ["a"] * 3 + ["b"] * 100 + ["c"] * 40
    ids = balanced_ids(groups, 30, random.Random(5))
    assert Counter(groups[i] for i in ids) == {"a": 3, "b": 14, "c": 13}
    assert ids == balanced_ids(groups, 30, random.Random(5))
    assert ids != balanced_ids(groups, 30, random.Random(6))


def test_policies_are_deterministic_and_seed_dependent(tokenizer):
    for policy in ("random", "reservoir", "balanced"):
        a, b, c = (build_strategy("replay", size=200, policy=policy) for _ in range(3))
        a.setup_data(new_stream(), stage_ctx(tokenizer))
        b.setup_data(new_stream(), stage_ctx(tokenizer))
        c.setup_data(new_stream(), stage_ctx(tokenizer, seed=2))
        assert a.buffer_ids == b.buffer_ids != c.buffer_ids, policy


def test_reservoir_is_uniform_over_what_was_offered():
    hits = Counter()
    for seed in range(600):
        res = Reservoir(10, seed)
        res.offer(range(100))
        assert len(res.items) == 10 and len(set(res.items)) == 10 and res.seen == 100
        hits.update(res.items)
    # each item kept with probability 10/100 -> 60 of 600; early and late items alike
    early, late = sum(hits[i] for i in range(20)) / 20, sum(hits[i] for i in range(80, 100)) / 20
    assert 50 < early < 70 and 50 < late < 70


def test_reservoir_carries_new_examples_into_the_next_stage_and_survives_state(tokenizer, past):
    replay = build_strategy("replay", size=1000, policy="reservoir")
    ctx = stage_ctx(tokenizer, index=2, name="instruct")
    replay.setup_data(new_stream(200, tag=1), ctx)
    assert ctx.notes["replay_buffer_size"] == 1000 and len(replay.buffer_ids) == 1000  # only past data yet
    replay.on_stage_end(ctx)
    assert replay.reservoir.seen == len(past) + 200
    state = json.loads(json.dumps(replay.state_dict()))  # goes through JSON in checkpoints
    ctx2 = stage_ctx(tokenizer, index=3, name="instruct2")
    replay.setup_data(new_stream(10, tag=2), ctx2)
    carried = ctx2.notes["replay_groups"].get("stage instruct", 0)
    assert 40 < carried < 150  # expected 200 * 1000 / 2375 = 84
    assert ctx2.notes["replay_buffer_size"] == 1000 == len(replay.buffer_ids) + carried
    again = build_strategy("replay", size=1000, policy="reservoir")
    again.load_state_dict(state)
    s2 = again.setup_data(new_stream(10, tag=2), stage_ctx(tokenizer, index=3, name="instruct2"))
    assert again.buffer_ids == replay.buffer_ids
    olds = [tuple(next(s2)["input_ids"]) for _ in range(4000)][::2]
    assert sum(1 for ids in set(olds) if ids[:2] == (7, 1)) == carried  # the carried new examples are replayed


def test_reservoir_carries_language_modelling_blocks_with_their_inputs_as_labels(tokenizer):
    replay = build_strategy("replay", size=1000, policy="reservoir")
    blocks = ExampleStream([{"input_ids": [9, 3, i]} for i in range(500)], seed=0)  # as lm_examples: no labels
    ctx = stage_ctx(tokenizer, index=1, name="adapt")
    replay.setup_data(blocks, ctx)
    replay.on_stage_end(ctx)
    carried = [item for item in replay.reservoir.items if item.get("stage") == "adapt"]
    assert carried and all(item["labels"] == item["input_ids"] for item in carried)


@pytest.mark.parametrize("policy", ["random", "reservoir", "balanced"])
def test_every_policy_composes_with_xling(tokenizer, policy):
    cfg = load_config(["languages=nusax", "strategy=xling+replay", "strategy.xling.max_pairs=5",
                       f"strategy.replay.policy={policy}", "strategy.replay.size=40"])
    composed = compose(OmegaConf.to_container(cfg.strategy))
    assert composed.names == ["xling", "replay"]
    xling, replay = (s for s, _ in composed.items)
    assert replay.policy == policy
    ctx = stage_ctx(tokenizer, cfg=cfg, languages=LanguageSet.from_config(cfg.languages), stage_languages="seen")
    stream = replay.setup_data(xling.setup_data(None, ctx), ctx)
    assert isinstance(stream, InterleavedStream)
    assert ctx.notes["replay_buffer_size"] == 40 and ctx.notes["xling_examples_total"] > 0
    new_ids = {tuple(e["input_ids"]) for e in stream.new.examples}
    batch = [next(stream) for _ in range(8)]
    assert [tuple(e["input_ids"]) in new_ids for e in batch] == [False, True] * 4
    if policy == "balanced":
        assert ctx.notes["replay_groups"] == {GSM: 20, SELF: 20}


def test_bad_policy_options_are_user_errors():
    with pytest.raises(UserError, match="policy"):
        build_strategy("replay", policy="fifo")
    with pytest.raises(UserError, match="group_by"):
        build_strategy("replay", policy="balanced", group_by="origin")
    with pytest.raises(UserError, match="Did you mean 'policy'"):
        load_config(["strategy=replay", "strategy.replay.polcy=random"])
