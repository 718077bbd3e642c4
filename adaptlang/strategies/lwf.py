"""Learning without forgetting (``lwf``) with avalanche-lib's ``LwFPlugin``.

Li & Hoiem (2017): the model at the end of the previous stage in which lwf acted is kept as
a frozen teacher; in later stages ``alpha * KL(softmax(teacher/T) || softmax(student/T))``
(Avalanche's ``_distillation_loss``, reduction batchmean) is added to the loss.

Adaptation to a causal LM (subclass of Avalanche's ``LearningWithoutForgetting``): the
"outputs" are the next-token logits at the labelled positions of the batch, the teacher runs
on the same batch, and the "previously active units" are the teacher's vocabulary (rows that
``vocab`` adds later are left out of the distillation, as Avalanche leaves out unseen
classes). The teacher is a deep copy of the model (memory: one more model). Needs the
logits, so the loop's loss shortcut is off in its stages (``needs_logits``). The teacher is
not checkpointed (see adaptlang.avalanche_bridge.not_resumable).
"""
from __future__ import annotations

import copy

import torch

from ..avalanche_bridge import Bridge, avalanche, not_resumable
from ..strategy import StageContext, Strategy, TrainState, register_strategy


def lm_lwf_plugin(alpha: float, temperature: float):
    LwFPlugin = avalanche("avalanche.training.plugins", "LwFPlugin")
    LearningWithoutForgetting = avalanche("avalanche.training.regularization", "LearningWithoutForgetting")

    class LMLearningWithoutForgetting(LearningWithoutForgetting):
        def _lwf_penalty(self, out, x, curr_model):
            """``out``: student logits at the labelled positions; ``x``: the batch."""
            if self.prev_model is None:
                return 0
            with torch.no_grad():
                prev = self.prev_model(**x).logits[:, :-1][x["labels"][:, 1:] != -100]
            return self._distillation_loss(out, prev, range(prev.shape[-1]))

        def post_adapt(self, agent, exp):
            self.expcount += 1
            self.prev_model = copy.deepcopy(agent.model.model).eval()
            for p in self.prev_model.parameters():
                p.requires_grad_(False)

    plugin = LwFPlugin(alpha=alpha, temperature=temperature)
    plugin.lwf = LMLearningWithoutForgetting(alpha=alpha, temperature=temperature)
    return plugin


@register_strategy("lwf")
class LwF(Strategy):
    """Distil the previous stage's model into the current one on the current data."""

    after = ("xling", "mlm", "replay")
    stages = ("pretrain", "adapt", "instruct")
    needs_logits = True

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        self.plugin = lm_lwf_plugin(float(alpha), float(temperature))
        self.stages_done = 0

    def extra_loss(self, batch, outputs, state: TrainState):
        if self.plugin.lwf.prev_model is None:
            return None
        bridge = Bridge(state.model)
        bridge.loss = torch.zeros((), device=bridge.device)
        bridge.mb_x = batch
        bridge.mb_output = outputs.logits[:, :-1][batch["labels"][:, 1:] != -100]
        self.plugin.before_backward(bridge)
        return bridge.loss

    def on_stage_end(self, ctx: StageContext) -> None:
        bridge = Bridge(ctx.model, experiences=self.stages_done)
        self.plugin.after_training_exp(bridge)
        self.stages_done += 1

    def state_dict(self) -> dict:
        return {"stages_done": self.stages_done}

    def load_state_dict(self, state: dict) -> None:
        not_resumable(self.name, state, self.plugin.lwf.prev_model is not None)
        self.stages_done = int(state["stages_done"])
