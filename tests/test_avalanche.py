"""ewc, lwf, agem, si: avalanche-lib's plugins act inside adaptlang's loop (penalties zero before
the first stage and positive once parameters move, gradient projection, effect on training).
They need avalanche-lib (the README's test command installs it). Outside CI, without it only
the error test runs; in CI (CI set) a missing avalanche-lib fails the run instead of skipping."""
import importlib.util
import json
import os

import pytest
import torch

from adaptlang import UserError, load_config
from adaptlang.sources import read_text
from adaptlang.batching import collate
from adaptlang.data import ExampleStream, lm_examples
from adaptlang.languages import CORPORA
from adaptlang.composition import compose
from adaptlang.strategy import TrainState

from conftest import QUICK, make_model, run_test_stage, stage_ctx, train_options

HAVE_AVALANCHE = importlib.util.find_spec("avalanche") is not None
if os.environ.get("CI") and not HAVE_AVALANCHE:
    pytest.fail("CI runs the avalanche-backed tests, and avalanche-lib is not installed: use the README's test "
                "command (pip install -e '.[test,avalanche]' in its own venv)", pytrace=False)
needs_avalanche = pytest.mark.skipif(not HAVE_AVALANCHE, reason="avalanche-lib not installed (pip install -e '.[avalanche]')")
TCFG = train_options(weight_decay=0.0, max_grad_norm=0.0)


def ctx_for(name, index, tokenizer, model):
    return stage_ctx(name, index, tokenizer=tokenizer, model=model)


def stream_of(tokenizer, file, seed=0):
    return ExampleStream(lm_examples(read_text(str(CORPORA / "ntrex128" / file), 120), tokenizer, 32), seed=seed)


def run_stage(model, tokenizer, strategies, name, index, file, steps=5):
    train = {k: TCFG[k] for k in TCFG}
    result = run_test_stage(model, tokenizer, strategies, stream_of(tokenizer, file, seed=index), name, index,
                            steps, train)
    return result.model


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def build(name, **options):
    return compose(name, {name: options}).items[0][0]


def test_without_avalanche_the_strategies_are_a_one_line_error():
    if HAVE_AVALANCHE:
        assert build("ewc").name == "ewc"
        return
    for name in ("ewc", "lwf", "agem", "si"):
        with pytest.raises(UserError, match=r"avalanche-lib.*\[avalanche\]"):
            build(name)
    assert load_config(["strategy=ewc+replay"]).strategy.ewc.ewc_lambda == 100.0  # the config still resolves


@pytest.mark.slow
@needs_avalanche
@pytest.mark.parametrize("name", ["ewc", "si"])
def test_penalty_zero_before_first_stage_zero_at_the_anchor_positive_after_moving(tokenizer, name):
    model = make_model(tokenizer)
    strategy = build(name)
    assert strategy.extra_loss(None, None, None) is None  # no past stage: no penalty
    model = run_stage(model, tokenizer, [strategy], "pretrain", 0, "eng-US.txt.gz")
    if name == "si":  # importances come from the path integral of the stage
        strategy.setup_data(None, ctx_for("adapt", 1, tokenizer, model))
    assert float(strategy.penalty(model).detach()) == pytest.approx(0.0, abs=1e-10)  # at the consolidated parameters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    moved = strategy.penalty(model)
    assert float(moved.detach()) > 0 and moved.requires_grad
    # its gradient pulls back: one small step against it lowers it
    grads = torch.autograd.grad(moved, list(model.parameters()), allow_unused=True)
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            if g is not None:
                p.sub_(1e-3 * g / (g.norm() + 1e-12))
    assert float(strategy.penalty(model).detach()) < float(moved.detach())


@pytest.mark.slow
@needs_avalanche
@pytest.mark.parametrize("name, options", [("ewc", {"ewc_lambda": 1e6, "fisher_batches": 2}), ("si", {"si_lambda": 1e4}),
                                           ("lwf", {"alpha": 1e3})])
def test_regularizers_keep_the_model_closer_to_the_previous_stage(tokenizer, name, options):
    """Same second stage (Russian) after the same first (English): with the regularizer the
    parameters (ewc, si) or the outputs (lwf) stay closer to the end of the first stage."""
    weight = next(iter(options))
    free, held = build(name, **{**options, weight: 0.0}), build(name, **options)
    ends = []
    for strategy in (free, held):
        model = run_stage(make_model(tokenizer), tokenizer, [strategy], "pretrain", 0, "eng-US.txt.gz")
        anchor, anchor_model = flat(model), __import__("copy").deepcopy(model)
        model = run_stage(model, tokenizer, [strategy], "adapt", 1, "rus.txt.gz", steps=6)
        if name == "lwf":
            batch = {k: torch.tensor(v) for k, v in next(stream_of(tokenizer, "eng-US.txt.gz", 9)).items()
                     if k in ("input_ids",)}
            with torch.no_grad():
                a = anchor_model(batch["input_ids"][None]).logits.log_softmax(-1)
                b = model(batch["input_ids"][None]).logits.log_softmax(-1)
            ends.append(float(torch.nn.functional.kl_div(b, a, log_target=True, reduction="batchmean")))
        else:
            ends.append(float((flat(model) - anchor).norm()))
    assert ends[1] < 0.8 * ends[0], ends  # AdamW bounds every step by lr: the penalty slows, cannot freeze


@needs_avalanche
def test_lwf_distillation_is_zero_against_itself_and_positive_after_moving(tokenizer):
    lwf = build("lwf")
    model = make_model(tokenizer)
    stream = stream_of(tokenizer, "eng-US.txt.gz")
    batch = collate([next(stream)], tokenizer.pad_token_id)
    batch.pop("num_tokens")
    assert lwf.extra_loss(batch, model(**batch), None) is None  # no teacher before the first stage end
    lwf.on_stage_end(ctx_for("pretrain", 0, tokenizer, model))
    state = TrainState(step=1, total_steps=1, model=model, optimizer=None, ctx=None)
    assert float(lwf.extra_loss(batch, model(**batch), state).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.5)
    assert float(lwf.extra_loss(batch, model(**batch), state).detach()) > 1e-4


@needs_avalanche
def test_agem_projects_only_conflicting_gradients(tokenizer):
    agem = build("agem", patterns_per_experience=8, sample_size=4)
    model = make_model(tokenizer)
    ctx = ctx_for("adapt", 1, tokenizer, model)
    agem.setup_data(stream_of(tokenizer, "eng-US.txt.gz"), ctx)
    agem.on_stage_end(ctx)
    assert len(agem.memory) == 8
    state = TrainState(step=3, total_steps=5, model=model, optimizer=None, ctx=ctx)
    seed = ctx.seed_for("agem.reference/3")  # the seed on_gradients derives at step 3
    ref = agem.reference_gradient(model, tokenizer, seed)
    assert float(ref.norm()) > 0
    for sign in (+1.0, -1.0):  # aligned: untouched; opposed: projected onto the plane orthogonal to ref
        offset = 0
        other = torch.randn_like(ref)
        other -= (other @ ref) / (ref @ ref) * ref  # a component orthogonal to ref, kept by the projection
        g = sign * ref + other
        for p in model.parameters():
            p.grad = g[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        agem.on_gradients(state)
        after = torch.cat([p.grad.flatten() for p in model.parameters()])
        if sign > 0:
            assert torch.equal(after, g)
        else:
            assert float(after @ ref) == pytest.approx(0.0, abs=1e-4 * float(ref @ ref))
            assert torch.allclose(after, other, atol=1e-5)
    assert ctx.notes["agem_projections"] == 1


@pytest.mark.slow
@needs_avalanche
def test_all_four_compose_with_replay_and_lora_through_the_pipeline(tmp_path):
    import adaptlang

    cfg = adaptlang.load_config(["strategy=ewc+lwf+agem+si+replay+lora", f"output_dir={tmp_path}", "name=cl", *QUICK,
                                 "strategy.replay.size=8", "strategy.agem.patterns_per_experience=4",
                                 "strategy.ewc.fisher_batches=1", "eval.benchmarks=[]"])
    path = adaptlang.run(cfg)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["stages"]["instruct"]["strategies"] == ["ewc", "lwf", "agem", "si", "replay"] or \
        set(metrics["stages"]["instruct"]["strategies"]) == {"ewc", "lwf", "agem", "si", "replay"}
    notes = metrics["stages"]["instruct"]["strategy_notes"]
    assert notes["agem_memory"] == 12 and notes["ewc_stages_consolidated"] == 3
