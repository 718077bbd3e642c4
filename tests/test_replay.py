"""replay interleaves past and new examples 1:1 in every batch, with buffer size r respected."""
import pytest
from omegaconf import OmegaConf

from adaptlang.composition import build_strategy
from adaptlang import UserError
from adaptlang.data import ExampleStream
from adaptlang.strategies.replay import InterleavedStream
from adaptlang.strategy import StageContext


def stage_ctx(tokenizer, batch_size=8, seed=1, max_length=64):
    train = OmegaConf.create({"batch_size": batch_size, "max_length": max_length})
    return StageContext(name="instruct", index=2, seed=seed, train=train, config=OmegaConf.create({}),
                        tokenizer=tokenizer)


def new_stream(n=50):
    return ExampleStream([{"input_ids": [5, i], "labels": [5, i], "kind": "new"} for i in range(n)], seed=0)


@pytest.mark.parametrize("r", [1, 10, 1000])
def test_batches_are_one_to_one_and_buffer_is_size_r(tokenizer, r):
    replay = build_strategy("replay", size=r)
    ctx = stage_ctx(tokenizer)
    stream = replay.setup_data(new_stream(), ctx)
    assert isinstance(stream, InterleavedStream)
    assert len(replay.buffer_ids) == r and len(set(replay.buffer_ids)) == r
    assert ctx.notes["replay_buffer_size"] == r
    seen_past = set()
    for _ in range(30):  # 30 batches of 8
        batch = [next(stream) for _ in range(8)]
        new = [e for e in batch if e.get("kind") == "new"]
        past = [e for e in batch if e.get("kind") != "new"]
        assert len(new) == len(past) == 4
        assert [e.get("kind") == "new" for e in batch] == [False, True] * 4  # s1_old, s1_new, ...
        seen_past.update(tuple(e["input_ids"]) for e in past)
    assert len(seen_past) == min(r, 120)  # never more distinct past examples than the buffer holds


def test_past_examples_are_encoded_instructions_with_prompt_masked(tokenizer):
    stream = build_strategy("replay", size=5).setup_data(new_stream(), stage_ctx(tokenizer, max_length=4096))
    past = next(stream)
    assert past["labels"][0] == -100 and past["labels"][-1] == tokenizer.eos_token_id
    n_prompt = sum(1 for x in past["labels"] if x == -100)
    assert 0 < n_prompt < len(past["input_ids"])


def test_r_zero_means_no_replay(tokenizer):
    stream = new_stream()
    assert build_strategy("replay", size=0).setup_data(stream, stage_ctx(tokenizer)) is stream


def test_r_larger_than_past_data_uses_all_of_it(tokenizer):
    replay = build_strategy("replay", size=10000)
    ctx = stage_ctx(tokenizer)
    replay.setup_data(new_stream(), ctx)
    assert len(replay.buffer_ids) == ctx.notes["replay_past_available"] == 2175


def test_buffer_sample_is_seeded(tokenizer):
    a, b, c = build_strategy("replay", size=20), build_strategy("replay", size=20), build_strategy("replay", size=20)
    a.setup_data(new_stream(), stage_ctx(tokenizer, seed=1))
    b.setup_data(new_stream(), stage_ctx(tokenizer, seed=1))
    c.setup_data(new_stream(), stage_ctx(tokenizer, seed=2))
    assert a.buffer_ids == b.buffer_ids != c.buffer_ids


def test_odd_batch_size_is_refused_in_the_plan():
    from adaptlang import load_config
    from adaptlang.plan import make_plan

    with pytest.raises(UserError, match="stage 'instruct' needs an even train.batch_size"):
        make_plan(load_config(["strategy=replay", "train.batch_size=7"]))
    make_plan(load_config(["strategy=replay", "train.batch_size=7", "strategy.replay.size=0"]))  # r=0: no pairs


def test_negative_size_is_refused():
    with pytest.raises(UserError, match=">= 0"):
        build_strategy("replay", size=-1)
