"""train.embedding_lr_ratio: the token embedding rows and the LM head learn at lr * ratio
(issue #18 item 3), in plain training and in vocab's stage (its TrainableTokens rows)."""
import pytest

from adaptlang import UserError, load_config
from adaptlang.data import ExampleStream
from adaptlang.plan import make_plan
from adaptlang.train import param_groups

from conftest import QUICK, make_model, run_test_stage


def test_groups_put_embeddings_and_head_at_their_own_rate(tokenizer):
    for tied in (False, True):
        model = make_model(tokenizer, tied=tied)
        groups = param_groups(model, 0.1, 1e-3, 0.2)
        embed = {id(p) for p in groups[-1]["params"]}
        assert groups[-1]["lr"] == pytest.approx(2e-4) and groups[0]["lr"] == 1e-3
        assert id(model.get_input_embeddings().weight) in embed and id(model.get_output_embeddings().weight) in embed
        assert len(embed) == (1 if tied else 2)
        assert not embed & {id(p) for g in groups[:-1] for p in g["params"]}
    assert len(param_groups(make_model(tokenizer), 0.1, 1e-3)) == 2  # ratio 1: the groups as before


def first_step_change(tokenizer, ratio: float) -> tuple[float, float]:
    model = make_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = tokenizer(["The cat sat on the mat and looked at the door."] * 4, add_special_tokens=False)["input_ids"]
    stream = ExampleStream([{"input_ids": x} for x in ids], seed=0)
    model = run_test_stage(model, tokenizer, [], stream, steps=1,
                           train={"lr": 1e-2, "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 0.0,
                                  "embedding_lr_ratio": ratio, "schedule": "constant"}).model
    after = dict(model.named_parameters())

    def moved(name):
        d = (after[name].detach() - before[name]).abs()
        return float(d[d > 0].mean())
    return moved("model.embed_tokens.weight"), moved("model.layers.0.mlp.up_proj.weight")


def test_the_loop_moves_embeddings_at_the_ratio(tokenizer):
    emb_full, body_full = first_step_change(tokenizer, 1.0)
    emb_low, body_low = first_step_change(tokenizer, 0.1)
    assert emb_low / emb_full == pytest.approx(0.1, rel=0.2)  # Adam's first step is lr-sized per element
    assert body_low == pytest.approx(body_full, rel=1e-5)


def test_a_non_positive_ratio_is_refused_in_the_plan():
    with pytest.raises(UserError, match="train.embedding_lr_ratio=0"):
        make_plan(load_config([*QUICK, "train.embedding_lr_ratio=0"]))


def test_vocab_sets_the_ratio_in_its_own_stages_and_conflicts_are_refused():
    plan = make_plan(load_config([*QUICK, "strategy=vocab", "strategy.vocab.embedding_lr_ratio=0.2"]))
    assert plan.stage("adapt").train["embedding_lr_ratio"] == 0.2
    assert plan.stage("pretrain").train["embedding_lr_ratio"] == plan.stage("instruct").train["embedding_lr_ratio"] == 1.0
    assert make_plan(load_config([*QUICK, "strategy=vocab"])).stage("adapt").train["embedding_lr_ratio"] == 1.0
    with pytest.raises(UserError, match="train.embedding_lr_ratio=0.5 but strategy.vocab sets 0.2"):
        make_plan(load_config([*QUICK, "strategy=vocab", "strategy.vocab.embedding_lr_ratio=0.2",
                               "experiment.stages.1.train.embedding_lr_ratio=0.5"]))
    for bad in ("0", "-1", "fast"):
        with pytest.raises(UserError, match=f"strategy.vocab.embedding_lr_ratio='?{bad}'?: expected a number > 0"):
            make_plan(load_config([*QUICK, "strategy=vocab", f"strategy.vocab.embedding_lr_ratio={bad}"]))
