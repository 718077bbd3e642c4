"""Averaged gradient episodic memory (``agem``) with avalanche-lib's ``AGEMPlugin``.

Chaudhry et al. (2019); Instruct-Align section 7 names A-GEM as a next method to try. After
every stage in which it acts, ``patterns_per_experience`` of that stage's training examples
(seeded sample) join an episodic memory. In later stages, at every optimizer step a
reference gradient g_ref is computed on ``sample_size`` memory examples; when the step's
gradient g has g . g_ref < 0 it is projected to g - (g . g_ref / g_ref . g_ref) g_ref
(Avalanche's ``after_backward``, run unchanged on the model's gradients).

Adaptation to a causal LM: Avalanche computes g_ref in ``before_training_iteration`` from an
(x, y, task label) memory batch; here it is the gradient of the next-token loss on a padded
memory batch (torch.autograd.grad, so accumulated gradients and DDP hooks are untouched),
computed in the ``on_gradients`` hook (after the step's backward passes, before clipping),
followed by Avalanche's projection. The memory holds token ids and labels (JSON, so it is
checkpointed). Every draw is seeded by (seed, stage, "agem.reference/<step>"): all ranks
project identically.

Sharded (``train.fsdp``; ``sharded_projection``): FSDP's parameters are not those the forward
differentiates (it gathers whole copies), so g_ref is a backward through the sharded model
into ``.grad`` (the step's gradient set aside meanwhile): every rank runs the same memory
batch, the reduce-scatter's average is g_ref, and each rank holds its piece. The dot products
g . g_ref and g_ref . g_ref are summed over the pieces and all-reduced, and each rank
projects its piece: Avalanche's formula on the whole vector, element for element.
"""
from __future__ import annotations

import random

import torch

from .bridge import Bridge, avalanche, lm_gradients
from ...batching import labels_of, make_batch
from ...errors import UserError
from ...sharding import holds_shards, local
from ...strategy import StageContext, Strategy, TrainState, register_strategy


@register_strategy("agem")
class AGEM(Strategy):
    """Project each step's gradient so that the loss on an episodic memory does not increase."""
    phase = "memory"  # its memory is drawn from the stage's final data stream
    remembers = "examples"  # token ids: still valid after a vocabulary grows

    def __init__(self, patterns_per_experience: int, sample_size: int):
        if int(patterns_per_experience) < 1 or int(sample_size) < 1:
            raise UserError("strategy.agem.patterns_per_experience and sample_size must be >= 1")
        AGEMPlugin = avalanche("avalanche.training.plugins", "AGEMPlugin")
        self.plugin = AGEMPlugin(int(patterns_per_experience), int(sample_size))
        self.patterns, self.sample_size = int(patterns_per_experience), int(sample_size)
        self.memory: list[dict] = []
        self.stream = None
        self.projections = 0

    def setup_data(self, stream, ctx: StageContext):
        self.stream = stream
        self.projections = 0
        return stream

    def memory_batch(self, tokenizer, seed: int, device) -> dict:
        sample = random.Random(seed).sample(self.memory, min(self.sample_size, len(self.memory)))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batch = make_batch(sample, pad, None)
        batch.pop("num_tokens", None)
        return {k: v.to(device) for k, v in batch.items()}

    def reference_gradient(self, model, tokenizer, seed: int) -> torch.Tensor:
        device = next(model.parameters()).device
        named = list(model.named_parameters())  # every trainable tensor of this stage, adapters included
        trainable = [p for _, p in named if p.requires_grad]
        grads = iter(lm_gradients(model, self.memory_batch(tokenizer, seed, device), trainable))
        return torch.cat([next(grads).reshape(-1) if p.requires_grad else torch.zeros(p.numel(), device=device)
                          for _, p in named])

    def on_gradients(self, state: TrainState) -> None:
        if not self.memory:
            return
        ctx = state.ctx
        seed = ctx.seed_for(f"agem.reference/{state.step}")
        if holds_shards(state.model):
            self.sharded_projection(state.model, ctx.tokenizer, seed)
            ctx.notes["agem_projections"] = self.projections
            return
        self.plugin.reference_gradients = self.reference_gradient(state.model, ctx.tokenizer, seed)
        self.plugin.buffers = [self.memory]  # non-empty: the plugin projects
        current = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                             for _, p in state.model.named_parameters()])
        if torch.dot(current, self.plugin.reference_gradients) < 0:
            self.projections += 1
        bridge = Bridge(state.model, state.optimizer)
        bridge.model = state.model  # A-GEM projects this stage's gradients: all of them, adapters included
        self.plugin.after_backward(bridge)
        ctx.notes["agem_projections"] = self.projections

    @torch.no_grad()
    def sharded_projection(self, model, tokenizer, seed: int) -> None:
        """Avalanche's ``after_backward`` on a sharded model: g_ref by FSDP's backward, the dot
        products all-reduced, each rank projecting its pieces of the gradients."""
        params = list(model.parameters())
        step_grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        with torch.enable_grad():
            model(**self.memory_batch(tokenizer, seed, next(model.parameters()).device)).loss.backward()
        reference = [p.grad for p in params]
        for p, g in zip(params, step_grads):
            p.grad = g
        pairs = [(local(g), local(r)) for g, r in zip(step_grads, reference)
                 if g is not None and r is not None]  # 0 elsewhere: no term, nothing to project
        refs = [local(r) for r in reference if r is not None]
        zero = torch.zeros((), device=params[0].device)
        dots = torch.stack([sum((torch.dot(g.reshape(-1), r.reshape(-1)) for g, r in pairs), zero),
                            sum((torch.dot(r.reshape(-1), r.reshape(-1)) for r in refs), zero)])
        torch.distributed.all_reduce(dots)
        if dots[0] < 0:
            self.projections += 1
            alpha2 = dots[0] / dots[1]
            for g, r in pairs:
                g.sub_(r * alpha2)

    def on_stage_end(self, ctx: StageContext) -> None:
        rng = random.Random(ctx.seed_for("agem.memory"))
        pool = getattr(self.stream, "examples", None)  # an ExampleStream: sample its examples
        if pool is None:  # a wrapped stream (replay): take the next examples it yields
            keep = [next(self.stream) for _ in range(self.patterns)]
        else:
            keep = [pool[i] for i in rng.sample(range(len(pool)), min(self.patterns, len(pool)))]
        self.memory += [{"input_ids": list(e["input_ids"]), "labels": list(labels_of(e))} for e in keep]
        ctx.notes["agem_memory"] = len(self.memory)
        self.stream = None

    def state_dict(self) -> dict:
        return {"memory": self.memory}

    def load_state_dict(self, state: dict) -> None:
        self.memory = [dict(e) for e in state["memory"]]

