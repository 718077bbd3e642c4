"""Experience replay (``replay``), Instruct-Align section 3.2.

"(IA)1 takes only r randomly sampled data from the past instruction-tuning data. The
sampled past data is used ... with a balanced sampling between the past data and new
data": every batch is B = {s1_old, s1_new, s2_old, s2_new, ...}, one past and one new
example per pair. r (``size``) is a config value; the paper tries 0, 1000 and 10000
(r=0 means no replay: batches hold new examples only).

The buffer is a fixed random sample of r past examples (seeded), drawn once at the start
of the stage; within the buffer, past examples are visited in reshuffled epochs.
When r exceeds the past data available, the whole past set is used, one warning line says
so, and the effective size is reported in metrics.json (``replay_buffer_size``).

``source`` names the past data: the built-in ``english`` (2,175 vendored English examples),
or a user's source from files or the hub (``data.instructions.<name>``, e.g. xP3 for BLOOMZ,
OpenOrca, Aya: adaptlang.instructions.files); a folder or hub source streams the first r
rows after a seeded shuffle buffer (or its ``max_rows``), from which the r are drawn.

``policy`` chooses how the r examples are kept (``buffer.py`` here): ``random`` (the
paper, above; the default), ``reservoir`` (a uniform sample of everything seen so far, carried
across stages: past data, then each replay stage's new examples) or ``balanced`` (equal
shares per group of past examples, the group being the values of ``group_by`` keys; the
built-in English past data carries ``target_language`` = en and ``origin`` = its file, so
the default balances GSM8K against self-instruct; a multilingual past source balances per
language). The interleaving is the same for every policy.

``loss_on_prompt`` (default false): the replayed examples are trained on their target only, as
instruction tuning is; true trains on the whole sequence (prompt and target), as the authors'
released run_t2t_finetuning.py does for decoder models (it joins an xP3 row as
``f"{inputs} {targets}"`` and trains on all of it). Examples carried by the reservoir from an
earlier stage keep the labels they were encoded with.
"""
from __future__ import annotations

import logging
import random

from ... import instructions
from ...batching import labels_of
from ...data import ExampleStream
from ...errors import UserError, listing
from .buffer import POLICIES, Reservoir, balanced_ids, group_of, random_ids
from ...seeds import derive_seed
from ...strategy import StageContext, Strategy, register_strategy


log = logging.getLogger("adaptlang")


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


def source_names(source) -> list[str]:
    """``strategy.replay.source``: one source name, or a list whose examples are concatenated
    (a model tuned on several sources, e.g. experiment ``ia``'s stand-in: [english, english_sentiment])."""
    names = [source] if isinstance(source, str) else list(source or [])
    if not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"strategy.replay.source={source!r}: a source name or a list of them, e.g. english")
    return names


@register_strategy("replay")
class ExperienceReplay(Strategy):
    """Interleave r past instruction examples 1:1 with the stage's new examples."""

    owns = frozenset({"data.mixture"})
    phase = "mixture"  # xling and mlm replace the new examples; replay wraps the result

    def __init__(self, size: int, source, policy: str, group_by, loss_on_prompt: bool):
        if int(size) < 0:
            raise UserError(f"strategy.replay.size={size}: must be >= 0")
        if policy not in POLICIES:
            raise UserError(f"strategy.replay.policy={policy!r}: valid: {listing(POLICIES)}")
        if isinstance(group_by, str) or not group_by or not all(isinstance(k, str) for k in group_by):
            raise UserError(f"strategy.replay.group_by={group_by!r}: a list of example keys, e.g. [target_language, origin]")
        self.size = int(size)
        self.sources = source_names(source)
        self.policy = policy
        self.group_by = list(group_by)
        if not isinstance(loss_on_prompt, bool):
            raise UserError(f"strategy.replay.loss_on_prompt={loss_on_prompt!r}: true or false")
        self.loss_on_prompt = loss_on_prompt
        self.buffer_ids: list[int] = []  # indices into the past data of the past examples in the buffer
        self.reservoir: Reservoir | None = None
        self._new = None  # this stage's new-example stream (offered to the reservoir at stage end)

    @classmethod
    def check_plan(cls, plan, me) -> None:
        if int(me.options.get("size", 1)) == 0:
            return
        for name in source_names(me.options.get("source")):
            instructions.check_source(name, plan.config, where="strategy.replay.source")
        for name in me.stages:
            batch_size = int(plan.stage(name).train["batch_size"])
            if batch_size % 2:
                raise UserError(f"replay interleaves 1:1, so stage '{name}' needs an even train.batch_size "
                                f"(got {batch_size})")

    def setup_data(self, stream, ctx: StageContext):
        if self.size == 0:
            ctx.notes["replay_buffer_size"] = 0
            return stream
        # the past data and the reservoir are the same in every stage: seeds without the stage
        seed = derive_seed(ctx.seed, "", "replay.past")
        past = [e for name in self.sources for e in instructions.build(name, ["en"], ctx.config, seed, self.size)]
        if len(past) < self.size:
            log.warning("strategy.replay.size=%d but source '%s' has %d examples: all of them are replayed",
                        self.size, "+".join(self.sources), len(past))
        rng = random.Random(ctx.seed_for("replay.buffer"))
        max_length = int(ctx.train.max_length)
        groups = [group_of(e, self.group_by) for e in past]
        carried: list[dict] = []  # reservoir items from earlier stages' new examples (already encoded)
        if self.policy == "random":
            self.buffer_ids = random_ids(len(past), self.size, rng)
        elif self.policy == "balanced":
            self.buffer_ids = balanced_ids(groups, self.size, rng)
        else:
            if self.reservoir is None:  # the past data is offered once, in its stored order
                self.reservoir = Reservoir(self.size, derive_seed(ctx.seed, "", "replay.reservoir"))
                self.reservoir.offer({"past": i} for i in range(len(past)))
            self.buffer_ids = sorted(item["past"] for item in self.reservoir.items if "past" in item)
            carried = [item for item in self.reservoir.items if "past" not in item]
        buffer = list(instructions.encode_all([past[i] for i in self.buffer_ids], ctx.tokenizer, max_length,
                                                instructions.chat_setting(ctx.config), self.loss_on_prompt))
        buffer += [{"input_ids": c["input_ids"], "labels": c["labels"]} for c in carried]
        kept: dict[str, int] = {}
        for i in self.buffer_ids:
            kept[groups[i]] = kept.get(groups[i], 0) + 1
        for c in carried:
            kept[f"stage {c['stage']}"] = kept.get(f"stage {c['stage']}", 0) + 1
        ctx.notes["replay_buffer_size"] = len(buffer)
        ctx.notes["replay_past_available"] = len(past)
        ctx.notes["replay_policy"] = self.policy
        ctx.notes["replay_groups"] = dict(sorted(kept.items()))
        self._new = stream
        return InterleavedStream(ExampleStream(buffer, ctx.seed_for("replay.order"), name="replay buffer"), stream)

    def on_stage_end(self, ctx: StageContext) -> None:
        if self.policy == "reservoir" and self.reservoir is not None and self._new is not None:
            examples = getattr(self._new, "examples", [])
            self.reservoir.offer({"stage": ctx.name, "input_ids": list(e["input_ids"]), "labels": list(labels_of(e))}
                                 for e in examples)
        self._new = None

    def state_dict(self) -> dict:
        return {"buffer_ids": self.buffer_ids,
                "reservoir": self.reservoir.state_dict() if self.reservoir is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_ids = list(state["buffer_ids"])
        if state.get("reservoir") is not None:
            self.reservoir = Reservoir.from_state(state["reservoir"])
