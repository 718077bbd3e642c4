"""The learning-rate schedule of a stage (``train.schedule``), built by transformers.

* ``cosine``: linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 (the
  active-forgetting paper, Tables 4-5: "Scheduler: Cosine, Warmup: Linear, 10%");
* ``linear``: linear warmup, then linear decay to 0 (Instruct-Align section 4.2: "an initial
  learning rate of 1e-5 with a linear learning rate decay");
* ``constant``: linear warmup, then constant.
"""
from __future__ import annotations

from transformers import get_scheduler

from .errors import UserError, listing, suggest

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def check_schedule(name, where: str = "train.schedule") -> str:
    name = str(name)
    if name not in SCHEDULES:
        raise UserError(f"{where}={name}: unknown schedule.{suggest(name, SCHEDULES)} Valid: {listing(SCHEDULES)}")
    return name


def make_scheduler(optimizer, name: str | None, warmup_steps: int, total_steps: int):
    """The LambdaLR of schedule ``name`` (one step per optimizer step). ``None`` (a train
    config without the key: built by hand, or saved before the key existed) is cosine, the
    schedule every run had before ``train.schedule``."""
    name = "cosine" if name is None else name
    return get_scheduler(SCHEDULES[check_schedule(name)], optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=total_steps)
