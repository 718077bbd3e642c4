"""Active forgetting (``af``).

Active-forgetting paper ("Exploring Pretraining via Active Forgetting for Improving Cross
Lingual Transfer for Decoder Language Models", arXiv:2410.16168), section 3, after Chen et al.
(2023): during pretraining the token embeddings are reset to random values every k steps
(``every``; the AF paper's value is blank in our copy of its Table 4, Chen et al. 2023 use
k = 1000 for RoBERTa-base; docs/papers.md). Here a reset

* re-initializes the input embedding matrix with the model's own initializer
  (``PreTrainedModel._init_weights``, i.e. normal(0, initializer_range) for Mistral);
* with tied input/output embeddings the LM head is the same tensor and is reset with it;
  an untied LM head is left alone (the paper resets token embeddings only);
* drops the AdamW state (both moments and the step count) of the reset tensor, so the
  fresh embeddings start with fresh moments; every other parameter and its optimizer
  state is untouched.

On other families (README, "Real decoder families"): a tied head (Qwen2, Gemma, GPT-2, BLOOM)
is the embedding tensor and is reset with it; Gemma's embedding scale lives in its forward and
is untouched; learned position embeddings (GPT-2's ``wpe``) and an untied head are not token
embeddings and are not reset. A padding row that is a real token (pad == eos) has been made
an ordinary row at load (adaptlang.models.free_padding_row), so the reset draws it like any
other instead of zeroing it for good.

The reset draws from its own generator seeded by (run seed, stage, "af.reset/<n>")
(adaptlang.seeds), so it does not perturb the data order and a resumed run resets identically. No reset happens
on a stage's final step (the saved model never ends with untrained embeddings).
"""
from __future__ import annotations

import torch

from ...errors import UserError
from ...sharding import is_dtensor, local, local_like, plain_copy
from ...strategy import Strategy, TrainState, register_strategy


def reset_embeddings(model, optimizer, seed: int) -> list[torch.nn.Parameter]:
    """Reset the token embeddings (and a tied LM head) and their optimizer state."""
    embedding = model.get_input_embeddings()
    weight = shard = embedding.weight
    if is_dtensor(shard):  # sharded (train.fsdp): draw the whole matrix as one process does, keep this rank's rows
        embedding = plain_copy(embedding, weight=torch.nn.Parameter(shard.full_tensor()))
        weight = embedding.weight
    if hasattr(weight, "_is_hf_initialized"):
        weight._is_hf_initialized = False  # transformers skips tensors it believes initialized
    before = weight.detach().clone()
    devices = [weight.device] if weight.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model._init_weights(embedding)
        if torch.equal(before, weight.detach()):  # an initializer that skipped the tensor
            std = getattr(model.config, "initializer_range", 0.02)
            with torch.no_grad():
                weight.normal_(0.0, std)
    if shard is not weight:
        with torch.no_grad():
            local(shard).copy_(local_like(weight.detach(), shard))
        weight = shard
    reset = [weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weight and getattr(model.config, "tie_word_embeddings", False):
        raise RuntimeError("config says tied embeddings but the LM head is a separate tensor")
    for p in reset:
        optimizer.state.pop(p, None)
    return reset


@register_strategy("af")
class ActiveForgetting(Strategy):
    """Reset token embeddings and their AdamW state every ``every`` optimizer steps."""

    owns = frozenset({"embeddings.rows"})  # it re-initializes them; vocab keeps old rows frozen
    phase = "embeddings"  # resets the rows vocab made (when both act in a stage)

    def __init__(self, every: int):
        if int(every) < 1:
            raise UserError(f"strategy.af.every={every}: must be a positive number of steps")
        self.every = int(every)
        self.resets = 0

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every == 0 and state.step < state.total_steps:
            self.resets += 1
            reset_embeddings(state.model, state.optimizer, state.ctx.seed_for(f"af.reset/{self.resets}"))
            state.ctx.notes["af_resets"] = self.resets

    def on_stage_end(self, ctx) -> None:
        ctx.notes["af_resets"] = self.resets

    def state_dict(self) -> dict:
        return {"resets": self.resets}

    def load_state_dict(self, state: dict) -> None:
        self.resets = int(state["resets"])
