"""Learning without forgetting (``lwf``) with avalanche-lib's ``LwFPlugin``.

Li & Hoiem (2017): the model at the end of the previous stage in which lwf acted is kept as
a frozen teacher; in later stages ``alpha * KL(softmax(teacher/T) || softmax(student/T))``
(Avalanche's ``_distillation_loss``, reduction batchmean) is added to the loss.

Adaptation to a causal LM (subclass of Avalanche's ``LearningWithoutForgetting``): the
"outputs" are the next-token logits at the labelled positions of the batch, the teacher runs
on the same batch, and the "previously active units" are the teacher's vocabulary (rows that
``vocab`` adds later are left out of the distillation, as Avalanche leaves out unseen
classes). The teacher is a deep copy of the model (memory: one more model). Needs the
logits, so the loop's loss shortcut is off in its stages (``needs_logits``). The teacher's
weights are part of the state (safetensors), so a killed run resumes bit for bit; it is
rebuilt from the model's class and config when first needed.

The teacher must read the same token ids as the student: a vocabulary change (``vocab``)
between the stage the teacher comes from and a stage it is applied in is refused by the
plan (``remembers = "model"``). LwF (Li & Hoiem 2017, section 3) runs the old network on
the *new task's inputs*; after a vocabulary expansion the old network cannot read those
inputs at all (it has no rows for the new ids), so there is no faithful meaning to give it.
Use lwf in stages from the vocabulary change on, or ewc / si, which leave new rows out.
"""
from __future__ import annotations

import copy

import torch

from .bridge import Bridge, avalanche
from ...strategy import StageContext, Strategy, TrainState, register_strategy


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

    phase = "memory"
    needs_logits = True
    remembers = "model"

    def __init__(self, alpha: float, temperature: float):
        self.plugin = lm_lwf_plugin(float(alpha), float(temperature))
        self.stages_done = 0
        self._teacher_weights = None  # loaded from a checkpoint, made into a model when first needed

    def _teacher_from_weights(self, model) -> None:
        with torch.random.fork_rng(devices=[]):  # building the module draws initial weights: keep the
            teacher = type(model)(copy.deepcopy(model.config))  # run's RNG (dropout masks) untouched
        teacher.load_state_dict(self._teacher_weights)
        param = next(model.parameters())
        self.plugin.lwf.prev_model = teacher.to(device=param.device, dtype=param.dtype).eval()
        for p in self.plugin.lwf.prev_model.parameters():
            p.requires_grad_(False)
        self._teacher_weights = None

    def extra_loss(self, batch, outputs, state: TrainState):
        if self._teacher_weights is not None:
            self._teacher_from_weights(state.model)
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
        teacher = self.plugin.lwf.prev_model
        weights = teacher.state_dict() if teacher is not None else self._teacher_weights
        return {"stages_done": self.stages_done, "expcount": self.plugin.lwf.expcount,
                "teacher": dict(weights) if weights is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.stages_done = int(state["stages_done"])
        self.plugin.lwf.expcount = int(state.get("expcount", self.stages_done))
        self.plugin.lwf.prev_model = None
        self._teacher_weights = state.get("teacher")
