"""merge (issue #29): the stage's result merged with a reference by peft's merge utilities.

Weight 0 is the reference bit for bit on the old rows, weight 1 the trained model; TIES and DARE
match hand-computed tensors with seeded masks; rows a vocabulary added are kept as trained; a
tied head stays tied; the reference round-trips through the strategy state (resume); bad
options are one line before training."""
from __future__ import annotations

import pytest
import torch

from adaptlang import UserError, load_config
from adaptlang.composition import build_strategy
from adaptlang.plan import make_plan
from adaptlang.state_io import load_state, save_state
from adaptlang.strategies.merge import METHODS, merge_tensor

from conftest import QUICK, bits, make_model, stage_ctx

REF = torch.tensor([1.0, 1.0, 1.0, 1.0])
TRAINED = torch.tensor([4.0, 0.0, 1.5, -1.0])  # task vector [3, -1, 0.5, -2]


def test_ties_by_hand():
    # top half by magnitude of tau: 3 and -2; one task vector, so its signs are the elected ones
    assert torch.equal(merge_tensor(REF, TRAINED, "ties", 0.5, 0.5), torch.tensor([2.5, 1.0, 1.0, 0.0]))
    # weight 1: the kept entries are the trained values themselves, the dropped ones the reference
    assert torch.equal(merge_tensor(REF, TRAINED, "ties", 1.0, 0.5), torch.tensor([4.0, 1.0, 1.0, -1.0]))
    assert torch.equal(merge_tensor(REF, TRAINED, "task_arithmetic", 0.5, 1.0), torch.tensor([2.5, 0.5, 1.25, 0.0]))
    assert torch.equal(merge_tensor(REF, TRAINED, "linear", 0.5, 1.0), torch.tensor([2.5, 0.5, 1.25, 0.0]))


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_by_hand_with_a_seeded_mask(method):
    ref, trained = REF.repeat(4), TRAINED.repeat(4)
    torch.manual_seed(7)
    mask = torch.bernoulli(torch.full_like(ref, 0.5))
    assert 0 < mask.sum() < mask.numel()
    # kept entries are rescaled by 1 / density = 2 and weighted by 0.5: the task vector itself
    expected = ref + (trained - ref) * mask
    torch.manual_seed(7)
    assert torch.equal(merge_tensor(ref, trained, method, 0.5, 0.5), expected)
    torch.manual_seed(7)  # weight 0.25: half of each kept entry
    assert torch.equal(merge_tensor(ref, trained, method, 0.25, 0.5), ref + (trained - ref) * mask / 2)


def train_a_little(model, grow: int = 0, seed: int = 1):
    """Stand-in for a stage: every parameter moves; ``grow`` new embedding rows, as vocab adds them."""
    gen = torch.Generator().manual_seed(seed)
    if grow:
        model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + grow)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def merged_stage(tokenizer, tied=False, grow=0, index=0, **options):
    model = make_model(tokenizer, tied=tied)
    strategy = build_strategy("merge", **options)
    ctx = stage_ctx("adapt", index, model=model, tokenizer=tokenizer)
    strategy.setup_model(model, tokenizer, ctx)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = train_a_little(model, grow)
    strategy.on_stage_end(ctx)
    return model, start, trained, ctx.notes["merge"], strategy


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tied", [False, True])
def test_weight_0_is_the_reference_and_weight_1_the_trained_model_new_rows_kept(tokenizer, method, tied):
    for weight in (0.0, 1.0):
        model, start, trained, notes, _ = merged_stage(tokenizer, tied=tied, grow=5, method=method, weight=weight)
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert (emb is head) == tied  # a tied head stays tied
        grown = {n for n, p in model.named_parameters() if p.shape != start[n].shape}
        assert grown == ({"model.embed_tokens.weight"} if tied else {"model.embed_tokens.weight", "lm_head.weight"})
        for name, p in model.named_parameters():
            rows = start[name].shape[0] if start[name].dim() else None
            old, new = (p[:rows], p[rows:]) if rows is not None else (p, p[:0])
            want = start[name] if weight == 0.0 else trained[name][:rows]
            assert bits(old) == bits(want), (method, weight, name)
            assert bits(new) == bits(trained[name][rows:]) if rows is not None else True  # new rows as trained
        assert notes["new_rows_kept_as_trained"] == {n: 5 for n in grown}
        assert notes["merged_tensors"] == len(start)


def test_a_half_merge_lies_between_and_dare_is_seeded_by_the_stage(tokenizer):
    model, start, trained, _, _ = merged_stage(tokenizer, method="linear", weight=0.5)
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(model.state_dict()[w], (start[w] + trained[w]) / 2, atol=1e-6)
    a, *_ = merged_stage(tokenizer, method="dare_ties", weight=0.5, density=0.3)
    b, *_ = merged_stage(tokenizer, method="dare_ties", weight=0.5, density=0.3)
    assert all(bits(p) == bits(q) for p, q in zip(a.parameters(), b.parameters()))
    model = make_model(tokenizer)
    strategy = build_strategy("merge", method="dare_linear", weight=0.5, density=0.3)
    ctx = stage_ctx("adapt", 1, model=model, tokenizer=tokenizer)
    strategy.setup_model(model, tokenizer, ctx)
    train_a_little(model)
    torch.manual_seed(123)  # the merge forks the global generator: the caller's stream is untouched
    before = torch.rand(3)
    torch.manual_seed(123)
    strategy.on_stage_end(ctx)
    assert torch.equal(torch.rand(3), before)


def test_the_reference_round_trips_through_the_saved_state(tokenizer, tmp_path):
    """A run resumed mid-stage restores the reference from the checkpoint and merges the same."""
    model = make_model(tokenizer)
    strategy = build_strategy("merge", method="dare_ties", weight=0.5, density=0.5)
    ctx = stage_ctx("adapt", 1, model=model, tokenizer=tokenizer)
    strategy.setup_model(model, tokenizer, ctx)
    save_state(tmp_path, "strategies", {"merge": strategy.state_dict()})
    train_a_little(model)
    resumed = build_strategy("merge", method="dare_ties", weight=0.5, density=0.5)
    resumed.load_state_dict(load_state(tmp_path, "strategies")["merge"])
    twin = make_model(tokenizer)
    twin.load_state_dict(model.state_dict())
    strategy.on_stage_end(ctx)
    resumed.on_stage_end(stage_ctx("adapt", 1, model=twin, tokenizer=tokenizer))
    assert all(bits(p) == bits(q) for p, q in zip(model.parameters(), twin.parameters()))
    assert strategy.state_dict() == {"start": {}, "base": {}}  # nothing kept after the stage


def test_reference_base_is_the_first_stages_start_and_is_kept(tokenizer):
    model = make_model(tokenizer)
    strategy = build_strategy("merge", reference="base", weight=0.0)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    for index, name in enumerate(["pretrain", "adapt"]):
        ctx = stage_ctx(name, index, model=model, tokenizer=tokenizer)
        strategy.setup_model(model, tokenizer, ctx)
        train_a_little(model, grow=3 if index == 1 else 0, seed=index + 1)
        strategy.on_stage_end(ctx)
    for n, p in model.named_parameters():  # weight 0: back to the run's start on the old rows
        assert bits(p[:base[n].shape[0]] if base[n].dim() else p) == bits(base[n])
    assert set(strategy.state_dict()["base"]) == set(base)


@pytest.mark.parametrize("option, fragment", [
    ("strategy.merge.weight=1.5", "strategy.merge.weight=1.5: expected a number from 0 to 1"),
    ("strategy.merge.weight=-0.1", "strategy.merge.weight=-0.1: expected a number from 0 to 1"),
    ("strategy.merge.method=slerp", "strategy.merge.method='slerp': expected one of"),
    ("strategy.merge.density=0", "strategy.merge.density=0: expected a number > 0"),
    ("strategy.merge.density=1.2", "strategy.merge.density=1.2: expected a number"),
    ("strategy.merge.reference=instruct", "strategy.merge.reference='instruct': expected one of"),
])
def test_bad_options_are_one_line_before_training(option, fragment):
    with pytest.raises(UserError) as refused:
        load_config(["strategy=merge", *QUICK, option])
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("options, fragment", [
    (["strategy.merge.reference=base"], "strategy.merge.reference=base: merge keeps the run's starting model when "
                                        "it sets up in the first stage ('pretrain')"),
    (["strategy.merge.density=0.5"], "method=linear keeps the whole task vector"),
])
def test_plans_that_cannot_work_are_refused_in_one_line(options, fragment):
    with pytest.raises(UserError) as refused:
        make_plan(load_config(["strategy=merge", *QUICK, *options]))
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    make_plan(load_config(["strategy=merge", *QUICK, "strategy.merge.reference=base",
                           "strategy.merge.stages=[pretrain,adapt]"]))


def test_the_strategy_refuses_bad_options_without_a_config_too():
    for options, fragment in [({"weight": 2}, "strategy.merge.weight=2"), ({"method": "x"}, "strategy.merge.method")]:
        with pytest.raises(UserError, match=fragment):
            build_strategy("merge", **options)


# --- the chat vector (arXiv 2310.04799): weight * (instruct - base) added after the merge ---------------

def saved_pair(tokenizer, folder, tied=False, cfg=None):
    """A base whose every entry is 1.0 and an instruct model whose every entry is 1.5 (chat vector 0.5)."""
    from adaptlang.models import build_model

    paths = {}
    for role, value in (("base", 1.0), ("instruct", 1.5)):
        model = build_model(cfg, tokenizer, 0) if cfg is not None else make_model(tokenizer, tied=tied)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        model.save_pretrained(folder / role)
        paths[role] = str(folder / role)
    return paths


@pytest.mark.parametrize("tied", [False, True])
def test_the_chat_vector_is_added_by_hand_and_new_rows_get_none(tokenizer, tmp_path, tied):
    pair = saved_pair(tokenizer, tmp_path, tied=tied)
    # merge weight 1: the merge keeps the trained model, so the stage's model is trained + 0.5 * 0.5
    model, start, trained, notes, strategy = merged_stage(tokenizer, tied=tied, grow=5, method="linear", weight=1.0,
                                                          chat_vector={**pair, "weight": 0.5})
    assert (model.get_input_embeddings().weight is model.get_output_embeddings().weight) == tied
    for name, p in model.named_parameters():
        rows = start[name].shape[0] if start[name].dim() == 2 else None
        old, new = (p[:rows], p[rows:]) if rows is not None else (p, p[:0])
        assert bits(old) == bits(trained[name][:rows] + 0.25), name
        if rows is not None:
            assert bits(new) == bits(trained[name][rows:]), name  # rows added by vocab: no delta
    norm = model.get_parameter("model.norm.weight")
    assert torch.equal(norm, trained["model.norm.weight"] + 0.25)
    cv = notes["chat_vector"]
    assert (cv["instruct"], cv["base"], cv["weight"], cv["tensors"]) == (pair["instruct"], pair["base"], 0.5,
                                                                         len(start))
    n = sum(t.numel() for n_, t in start.items())
    assert cv["norm"] == pytest.approx(0.5 * n ** 0.5)
    line = type(strategy).report_section("adapt", {"merge": notes})[0]
    assert f"chat vector {pair['instruct']} − {pair['base']} added with weight 0.5" in line
    # after a half merge: start + 0.5 (trained - start) + the chat vector
    model, start, trained, _, _ = merged_stage(tokenizer, tied=tied, method="linear", weight=0.5,
                                               chat_vector={**pair, "weight": 1.0})
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(model.get_parameter(w), (start[w] + trained[w]) / 2 + 0.5, atol=1e-6)


@pytest.mark.parametrize("chat_vector, fragment", [
    ({"instruct": "x"}, "strategy.merge.chat_vector.base: needs a model (path or name) when "
                        "strategy.merge.chat_vector.instruct is given"),
    ({"instruct": "x", "base": "y", "weight": -1}, "strategy.merge.chat_vector.weight=-1: expected a number >= 0"),
    ({"instruct": "x", "base": "y", "scale": 2}, "strategy.merge.chat_vector.scale: unknown option"),
])
def test_chat_vector_options_are_checked_in_one_line(chat_vector, fragment):
    with pytest.raises(UserError) as refused:
        build_strategy("merge", chat_vector=chat_vector)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_chat_vector_shapes_that_cannot_match_are_refused_by_the_plan(tokenizer, tmp_path):
    from adaptlang.models import build_model

    run = load_config(["strategy=merge", *QUICK]).model  # hidden 32, one layer
    good = saved_pair(tokenizer, tmp_path / "good", cfg=run)
    wider = saved_pair(tokenizer, tmp_path / "wider")  # hidden 64, two layers
    build_model({**run, "hidden_size": 48, "num_attention_heads": 4}, tokenizer, 0).save_pretrained(tmp_path / "odd")

    def plan(instruct, base):
        return make_plan(load_config(["strategy=merge", *QUICK, f"strategy.merge.chat_vector.instruct={instruct}",
                                      f"strategy.merge.chat_vector.base={base}"]))

    plan(good["instruct"], good["base"])  # the same architecture (rows are the run's tokenizer's): accepted
    for instruct, base, fragment in [
        (wider["instruct"], wider["base"], "strategy.merge.chat_vector: the run's model has parameter"),
        (good["instruct"], str(tmp_path / "odd"), "strategy.merge.chat_vector: instruct and base differ at parameter"),
        (good["instruct"], str(tmp_path / "missing"), "model path"),
    ]:
        with pytest.raises(UserError) as refused:
            plan(instruct, base)
        assert fragment in str(refused.value) and "\n" not in str(refused.value)
