"""Replay-buffer storage policies (used by the ``replay`` strategy).

* ``random`` -- Instruct-Align section 3.2: r examples drawn uniformly at random, without
  replacement, once per stage from the past data (seeded).
* ``reservoir`` -- reservoir sampling (Vitter's Algorithm R; the policy of Avalanche's
  ``ReservoirSamplingBuffer``): the buffer is a uniform sample of *everything offered so
  far*. The past data is offered once (in its stored order); at the end of every stage in
  which replay acts, that stage's new examples are offered too, so a later replay stage
  also replays earlier stages' new data. The buffer is carried across stages (and in the
  checkpoints: it is part of the strategy's state).
* ``balanced`` -- per-group balanced (Avalanche's ``GroupBalancedBuffer`` idea): the past
  examples are grouped by the values of ``group_by`` keys (default: ``target_language`` and
  ``origin``, e.g. ``en/gsm8k_train_2000``); groups are filled round-robin in sorted order
  from a seeded shuffle of each group, so every group gets floor(r/G) or one more, and a
  group with too few examples leaves its share to the others (max-min fair).

Avalanche's storage policies operate on ``AvalancheDataset`` objects and avalanche-lib
cannot be imported in adaptlang's default environment (it needs torchvision, whose registry
wheel fails against the CPU torch wheel), so the three policies are implemented here in
plain Python (a few lines each) with the same semantics. Every draw is seeded: all ranks of
a multi-process run build the same buffer.
"""
from __future__ import annotations

import random
from collections import defaultdict

from ...seeds import derive_seed

POLICIES = ("random", "reservoir", "balanced")


def group_of(example: dict, keys) -> str:
    values = [str(example[k]) for k in keys if example.get(k) not in (None, "")]
    return "/".join(values) or "(none)"


def random_ids(n: int, size: int, rng: random.Random) -> list[int]:
    return sorted(rng.sample(range(n), min(size, n)))


def balanced_ids(groups: list[str], size: int, rng: random.Random) -> list[int]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    queues = []
    for g in sorted(members):
        ids = members[g][:]
        rng.shuffle(ids)
        queues.append(ids)
    chosen: list[int] = []
    while len(chosen) < size and any(queues):
        for q in queues:
            if q and len(chosen) < size:
                chosen.append(q.pop())
    return sorted(chosen)


class Reservoir:
    """Algorithm R with a per-position seeded draw (resume-safe: no RNG state to carry)."""

    def __init__(self, size: int, seed: int, seen: int = 0, items: list | None = None):
        self.size, self.seed, self.seen = int(size), int(seed), int(seen)
        self.items: list = list(items or [])

    def offer(self, items) -> None:
        for item in items:
            t = self.seen
            if len(self.items) < self.size:
                self.items.append(item)
            else:
                j = random.Random(derive_seed(self.seed, "", f"reservoir/{t}")).randrange(t + 1)
                if j < self.size:
                    self.items[j] = item
            self.seen += 1

    def state_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "seen": self.seen, "items": self.items}

    @classmethod
    def from_state(cls, state: dict) -> "Reservoir":
        return cls(state["size"], state["seed"], state["seen"], state["items"])
