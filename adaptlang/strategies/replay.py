"""Experience replay (``replay``), Instruct-Align section 3.2.

"(IA)1 takes only r randomly sampled data from the past instruction-tuning data. The
sampled past data is used ... with a balanced sampling between the past data and new
data": every batch is B = {s1_old, s1_new, s2_old, s2_new, ...}, one past and one new
example per pair. r (``size``) is a config value; the paper tries 0, 1000 and 10000
(r=0 means no replay: batches hold new examples only).

The buffer is a fixed random sample of r past examples (seeded), drawn once at the start
of the stage; within the buffer, past examples are visited in reshuffled epochs.
When r exceeds the past data available, the whole past set is used and the effective
size is reported in metrics.json (``replay_buffer_size``).
"""
from __future__ import annotations

import random

from .. import instructions
from ..data import ExampleStream
from ..errors import UserError
from ..strategy import StageContext, Strategy, register_strategy


class InterleavedStream:
    """old, new, old, new, ...: with an even batch size every batch is exactly 1:1."""

    def __init__(self, old: ExampleStream, new):
        self.old, self.new = old, new
        self.turn = 0  # 0: next example is a past one

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        source = self.old if self.turn == 0 else self.new
        self.turn ^= 1
        return next(source)

    def __len__(self) -> int:
        return len(self.new)

    def state_dict(self) -> dict:
        return {"turn": self.turn, "old": self.old.state_dict(), "new": self.new.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.turn = state["turn"]
        self.old.load_state_dict(state["old"])
        self.new.load_state_dict(state["new"])


@register_strategy("replay")
class ExperienceReplay(Strategy):
    """Interleave r past instruction examples 1:1 with the stage's new examples."""

    owns = frozenset({"data.mixture"})
    after = ("xling", "mlm")  # they replace the new examples; replay wraps the result
    stages = ("instruct",)

    def __init__(self, size: int = 1000, source: str = "english"):
        if int(size) < 0:
            raise UserError(f"strategy.replay.size={size}: must be >= 0")
        self.size = int(size)
        self.source = str(source)
        self.buffer_ids: list[int] = []

    def setup_data(self, stream, ctx: StageContext):
        if self.size == 0:
            ctx.notes["replay_buffer_size"] = 0
            return stream
        batch_size = int(ctx.stage.train.batch_size)
        if batch_size % 2:
            raise UserError(f"replay interleaves 1:1, so stage '{ctx.name}' needs an even train.batch_size "
                            f"(got {batch_size})")
        past = instructions.build(self.source, ["en"], ctx.config, ctx.seed)
        rng = random.Random(ctx.seed * 7919 + ctx.index)
        self.buffer_ids = sorted(rng.sample(range(len(past)), min(self.size, len(past))))
        buffer = instructions.encode_all([past[i] for i in self.buffer_ids], ctx.tokenizer,
                                         int(ctx.stage.train.max_length))
        ctx.notes["replay_buffer_size"] = len(self.buffer_ids)
        ctx.notes["replay_past_available"] = len(past)
        return InterleavedStream(ExampleStream(buffer, ctx.seed + 17, name="replay buffer"), stream)

    def state_dict(self) -> dict:
        return {"buffer_ids": self.buffer_ids}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_ids = list(state["buffer_ids"])
