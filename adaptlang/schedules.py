"""The learning-rate schedule of a stage (``train.schedule``), built by transformers.

* ``cosine``: linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 (the
  active-forgetting paper, Tables 4-5: "Scheduler: Cosine, Warmup: Linear, 10%");
* ``linear``: linear warmup, then linear decay to 0 (Instruct-Align section 4.2: "an initial
  learning rate of 1e-5 with a linear learning rate decay");
* ``constant``: linear warmup, then constant;
* ``wsd``: warmup-stable-decay -- linear warmup, constant, then a (1 - sqrt) decay to 0 over the
  last ``decay_ratio`` of the steps (transformers' ``warmup_stable_decay``; the 1-sqrt shape is
  the cooldown Hägele et al. 2024, arXiv 2405.18392, found best);
* ``constant_cooldown``: linear warmup, constant, then a linear cooldown to 0 over the last
  ``decay_ratio`` of the steps.

Every stage builds its own schedule: each stage warms up again and decays again (re-warm and
re-decay, Ibrahim et al. 2024, arXiv 2403.08763, section 5); a stage's own
``train.warmup_ratio: 0`` starts it at its peak lr instead (no warmup; the lr still jumps back
to the peak, so this is not "no re-warming": for that, continue at a low constant lr, e.g.
``schedule: constant`` with a small ``lr``, as ``grid=cpt_replay``'s re-warm-off runs do).
"""
from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from .errors import UserError, listing, suggest

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup",
             "wsd": "warmup_stable_decay", "constant_cooldown": "warmup_stable_decay"}
DECAY_SHAPES = {"wsd": "1-sqrt", "constant_cooldown": "linear"}


def check_schedule(name, where: str = "train.schedule") -> str:
    name = str(name)
    if name not in SCHEDULES:
        raise UserError(f"{where}={name}: unknown schedule.{suggest(name, SCHEDULES)} Valid: {listing(SCHEDULES)}")
    return name


def make_scheduler(optimizer, name: str | None, warmup_steps: int, total_steps: int, decay_ratio: float = 0.2):
    """The LambdaLR of schedule ``name`` (one step per optimizer step). ``None`` (a train
    config without the key: built by hand, or saved before the key existed) is cosine, the
    schedule every run had before ``train.schedule``. ``decay_ratio``: the decaying part of
    ``wsd`` and ``constant_cooldown`` (the stable part is what warmup and decay leave)."""
    name = "cosine" if name is None else check_schedule(name)
    if name in DECAY_SHAPES:
        decay = min(math.ceil(decay_ratio * total_steps), total_steps - warmup_steps)
        return get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup_steps,
                             num_training_steps=total_steps,
                             scheduler_specific_kwargs={"num_decay_steps": max(0, decay),
                                                        "decay_type": DECAY_SHAPES[name]})
    return get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def lr_curve(train, steps: int, points: int = 200) -> list[list[float]]:
    """[step, lr] of a stage's schedule (the lr each optimizer step uses), at most ``points``
    steps evenly spread, first and last included: the report's plot."""
    lr = float(train["lr"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer, train.get("schedule"), math.ceil(float(train["warmup_ratio"]) * steps),
                               steps, float(train.get("decay_ratio", 0.2)))
    factor = scheduler.lr_lambdas[0]
    n = min(points, steps)
    chosen = sorted({round(i * (steps - 1) / max(1, n - 1)) for i in range(n)})
    return [[s + 1, round(lr * factor(s), 10)] for s in chosen]
