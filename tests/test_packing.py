"""Packing changes no example's loss: attention and loss stay within each example."""
import random

import pytest
import torch

from adaptlang.batching import collate, collate_packed, make_batch, pack_rows


def examples(n=7, seed=0, vocab=500):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(4, 40)
        prompt = rng.randint(1, length - 2)
        ids = [1] + [rng.randint(3, vocab - 1) for _ in range(length - 1)]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def per_example_losses(model, batch, spans):
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "num_tokens"}).logits
    losses = []
    for row, start, n in spans:
        lg = logits[row, start : start + n - 1]
        lb = batch["labels"][row, start + 1 : start + n]
        losses.append(torch.nn.functional.cross_entropy(lg, lb, ignore_index=-100, reduction="sum"))
    return torch.stack(losses)


def test_pack_rows_first_fit():
    rows = pack_rows([5, 3, 4, 2, 6], width=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 6][i] for i in r) <= 8 for r in rows)
    assert len(rows) == 3
    assert pack_rows([12], width=8) == [[0]]  # an example longer than a row gets its own row


def test_per_example_loss_is_unchanged_by_packing(model):
    model.eval()
    exs = examples()
    padded = collate(exs, pad_id=0)
    packed = collate_packed(exs, pad_id=0, width=64)
    assert packed["input_ids"].shape[0] < len(exs)
    assert int(packed["num_tokens"]) == int(padded["num_tokens"]) == sum(len(e["input_ids"]) for e in exs)
    alone = per_example_losses(model, padded, [(i, 0, len(e["input_ids"])) for i, e in enumerate(exs)])
    spans = {}
    for r, row in enumerate(pack_rows([len(e["input_ids"]) for e in exs], 64)):
        start = 0
        for i in row:
            spans[i] = (r, start, len(exs[i]["input_ids"]))
            start += len(exs[i]["input_ids"])
    together = per_example_losses(model, packed, [spans[i] for i in range(len(exs))])
    assert torch.allclose(alone, together, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        loss_padded = model(**{k: v for k, v in padded.items() if k != "num_tokens"}).loss
        loss_packed = model(**{k: v for k, v in packed.items() if k != "num_tokens"}).loss
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5)


def test_without_the_mask_packing_would_leak(model):
    """The check above can fail: dropping the block mask changes the later examples' losses."""
    model.eval()
    exs = examples(4, seed=3)
    packed = collate_packed(exs, pad_id=0, width=200)
    leaky = dict(packed)
    leaky["attention_mask"] = torch.ones(packed["input_ids"].shape, dtype=torch.long)
    with torch.no_grad():
        a = model(**{k: v for k, v in packed.items() if k != "num_tokens"}).loss
        b = model(**{k: v for k, v in leaky.items() if k != "num_tokens"}).loss
    assert abs(a.item() - b.item()) > 1e-3


def test_equal_length_blocks_are_not_packed():
    blocks = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * 3
    assert make_batch(blocks, 0, 256)["attention_mask"].dim() == 2
    assert make_batch(examples(3), 0, 256)["attention_mask"].dim() == 4
    assert make_batch(examples(3), 0, None)["attention_mask"].dim() == 2


def test_rows_of_one_example_go_unmasked_and_keep_every_examples_loss(model):
    """Examples too long to share a row: no mask (the model's causal attention), and each
    example's loss equals its loss in the block-diagonal-masked packed batch."""
    exs = examples(5, seed=3)
    width = max(len(e["input_ids"]) for e in exs)
    unmasked = make_batch(exs, 0, 1)  # rows of one token: no two examples can share a row
    assert "attention_mask" not in unmasked and unmasked["input_ids"].shape[0] == len(exs)
    masked = collate_packed(exs, 0, 1)
    assert masked["attention_mask"].dim() == 4
    spans = [(i, 0, len(e["input_ids"])) for i, e in enumerate(exs)]
    order = sorted(range(len(exs)), key=lambda i: -len(exs[i]["input_ids"]))  # collate_packed's row order
    packed_spans = [(order.index(i), 0, len(e["input_ids"])) for i, e in enumerate(exs)]
    assert torch.allclose(per_example_losses(model, unmasked, spans), per_example_losses(model, masked, packed_spans),
                          atol=1e-4)
    assert make_batch(exs, 0, 2 * width)["attention_mask"].dim() == 4  # rows shared: the block-diagonal mask


def test_loss_on_targets_equals_the_models_own_loss(model):
    from adaptlang.train import loss_on_targets

    exs = examples(5, seed=9)
    for batch in (collate(exs, 0), collate_packed(exs, 0, 64)):
        batch = {k: v for k, v in batch.items() if k != "num_tokens"}
        ours, _ = loss_on_targets(model, batch)
        theirs = model(**batch).loss
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        ours.backward()
        g1 = model.lm_head.weight.grad.clone()
        model.zero_grad()
        theirs.backward()
        assert torch.allclose(g1, model.lm_head.weight.grad, atol=1e-6)
        model.zero_grad()


def test_per_example_attention_gives_the_masked_losses_and_gradients(model):
    """adaptlang.segment_attention: each example attends to itself alone, from its lengths, not
    the mask -- given a leaky all-ones mask it still gives every example's own loss -- and the
    loss and its gradients are those of the block-diagonal mask."""
    from adaptlang.models import attend_per_example

    exs = examples(9, seed=5)
    packed = collate_packed(exs, pad_id=0, width=80, segments=True)
    assert packed["input_ids"].shape[0] < len(exs)
    lengths = packed["segments"].sum(dim=1)
    assert (lengths == packed["input_ids"].shape[1]).all()  # every row's examples and its padding

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = model(**{k: v for k, v in batch.items() if k != "num_tokens"}).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    masked = {k: v for k, v in packed.items() if k != "segments"}
    ref_loss, ref_grads = loss_and_grads(masked)
    assert attend_per_example(model, pad_id=0) == "sdpa"
    try:
        leaky = {**packed, "attention_mask": torch.zeros_like(packed["attention_mask"])}
        loss, grads = loss_and_grads(leaky)
        without_segments, _ = loss_and_grads({k: v for k, v in leaky.items() if k != "segments"})
    finally:
        model.set_attn_implementation("sdpa")
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert grads.keys() == ref_grads.keys()
    assert all(torch.allclose(grads[n], ref_grads[n], rtol=1e-4, atol=1e-6) for n in grads)
    assert abs(without_segments - ref_loss) > 1e-3  # the leaky mask alone would mix the examples


def test_a_packed_stage_hands_back_the_models_own_attention(model, tokenizer):
    from accelerate import Accelerator
    from omegaconf import OmegaConf

    from adaptlang.data import ExampleStream
    from adaptlang.strategy import StageContext
    from adaptlang.train import train_stage

    exs = examples(40, seed=1, vocab=model.config.vocab_size)
    tcfg = OmegaConf.create({"batch_size": 4, "grad_accum": 1, "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.95],
                             "eps": 1e-8, "warmup_ratio": 0.0, "max_grad_norm": 1.0, "packing": True,
                             "max_length": 64, "log_every": 100})
    ctx = StageContext(name="t", index=0, seed=0, train=tcfg, config=None)
    trained, stats = train_stage(model, tokenizer, ExampleStream(exs, 0), [], tcfg, 2, Accelerator(cpu=True), ctx)
    assert stats["packing"] == "per-example attention + per-example positions"
    assert trained.config._attn_implementation == "sdpa"
