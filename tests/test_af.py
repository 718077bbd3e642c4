"""af resets exactly the embedding rows (and a tied head) and their optimizer state, every k steps."""
import pytest
import torch
from omegaconf import OmegaConf

from adaptlang.composition import build_strategy
from adaptlang.strategies.af import ActiveForgetting
from adaptlang.strategy import StageContext, TrainState

from conftest import snapshot


def ctx():
    return StageContext(name="pretrain", index=0, seed=3, train=None)


def warm_optimizer(model, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(3, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def optimizer_snapshot(opt):
    return {id(p): {k: v.clone() for k, v in st.items()} for p, st in opt.state.items()}


def test_reset_only_embeddings_and_their_optimizer_state(model):
    opt = warm_optimizer(model)
    before, states = snapshot(model), optimizer_snapshot(opt)
    emb = model.get_input_embeddings().weight
    af = build_strategy("af", every=2)
    af.on_step_end(TrainState(step=1, total_steps=10, model=model, optimizer=opt, ctx=ctx()))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), "reset off-schedule"
    af.on_step_end(TrainState(step=2, total_steps=10, model=model, optimizer=opt, ctx=ctx()))
    after = snapshot(model)
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed == {"model.embed_tokens.weight"}
    assert emb not in opt.state, "embedding AdamW moments must be dropped"
    for p, st in opt.state.items():
        for k, v in st.items():
            assert torch.equal(v, states[id(p)][k]), "other optimizer state must be untouched"
    assert len(opt.state) == len(states) - 1
    # fresh values follow the model's initializer: normal(0, initializer_range)
    std = float(emb.detach().std())
    assert abs(std - model.config.initializer_range) < 0.002
    assert abs(float(emb.detach().mean())) < 0.002


def test_tied_head_is_reset_with_embeddings(tied_model):
    model = tied_model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    opt = warm_optimizer(model)
    before = snapshot(model)
    build_strategy("af", every=1).on_step_end(TrainState(step=1, total_steps=5, model=model, optimizer=opt, ctx=ctx()))
    head = model.get_output_embeddings().weight
    assert not torch.equal(head, before["model.embed_tokens.weight"])
    assert torch.equal(head, model.get_input_embeddings().weight)
    assert head not in opt.state
    others = [n for n in before if n != "model.embed_tokens.weight"]
    assert all(torch.equal(dict(model.named_parameters())[n], before[n]) for n in others)


def test_untied_head_is_left_alone(model):
    opt = warm_optimizer(model)
    head_before = model.lm_head.weight.detach().clone()
    build_strategy("af", every=1).on_step_end(TrainState(step=1, total_steps=5, model=model, optimizer=opt, ctx=ctx()))
    assert torch.equal(model.lm_head.weight, head_before)
    assert model.lm_head.weight in opt.state


@pytest.mark.slow
def test_resets_every_k_steps_in_the_training_loop(model, tokenizer):
    from accelerate import Accelerator

    from adaptlang.data import ExampleStream
    from adaptlang.train import train_stage

    examples = [{"input_ids": list(range(3, 19)), "labels": list(range(3, 19))} for _ in range(8)]
    stream = ExampleStream(examples, seed=0)
    tcfg = OmegaConf.create({"batch_size": 2, "grad_accum": 1, "lr": 1e-3, "weight_decay": 0.01,
                             "betas": [0.9, 0.95], "eps": 1e-8, "warmup_ratio": 0.1,
                             "max_grad_norm": 1.0, "log_every": 100})
    seen = []

    class Spy(ActiveForgetting):
        def on_step_end(self, state):
            before = state.model.get_input_embeddings().weight.detach().clone()
            super().on_step_end(state)
            if not torch.equal(before, state.model.get_input_embeddings().weight):
                seen.append(state.step)
                emb = state.model.get_input_embeddings().weight
                assert emb not in state.optimizer.state

    af = Spy(every=3)
    c = ctx()
    model, stats = train_stage(model, tokenizer, stream, [af], tcfg, 10, Accelerator(cpu=True), c)
    assert seen == [3, 6, 9] and af.resets == 3 and c.notes["af_resets"] == 3
    assert stats["steps"] == 10


def test_reset_is_deterministic_for_a_seed(tokenizer):
    from conftest import make_model

    a, b = make_model(tokenizer), make_model(tokenizer)
    for m in (a, b):
        opt = torch.optim.AdamW(m.parameters())
        build_strategy("af", every=1).on_step_end(TrainState(step=1, total_steps=5, model=m, optimizer=opt, ctx=ctx()))
    assert torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
