"""The training loop: the one place where strategy hooks fire. Reads top to bottom.

``train_stage`` sets up with ``build_optimizer``, ``plan_batches`` (the global batch and this
rank's share), ``forward_path`` (the LM-head shortcut, ``train.compile``) and ``resume_tally``
(the loop's counts from a checkpoint), runs the loop, and returns the model (``hand_back``)
and the stage's ``figures``.

AdamW with linear warmup and cosine decay (the active-forgetting paper's Tables 4-5:
cosine scheduler, linear warmup over 10% of the steps, AdamW; ``train.schedule`` switches to
linear decay or constant, adaptlang.schedules), gradient accumulation,
gradient clipping, seeded, on accelerate (one device, several GPUs or nodes alike).

Several processes (``accelerate launch``): ``train.batch_size`` is the *global* batch. Every
rank draws the same global batch from its identically seeded stream and keeps its own
contiguous share; each rank's mean loss is weighted by its share of the global labelled
tokens (counts all-reduced), so DDP's gradient average is the gradient of the global
token-mean loss -- the same step as one process with the same batch, up to float
rounding. The logged loss is the all-reduced global value; only rank 0 writes checkpoints.

Sharded (``train.fsdp=true``, adaptlang.sharding): accelerate's FSDP2 shards the model when
the optimizer is prepared and averages the gradients by reduce-scatter, so the same weighting
gives the one-process step; checkpoints gather the whole state first (every rank), and the
stage hands back a whole, plain model on every rank.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from accelerate.utils import DistributedType

from .checkpoint import Checkpointer
from .compiling import Compilation, fused_optimizer_ok
from .batching import make_batch
from .data import ExampleStream
from .errors import UserError
from .fused_loss import fuses, linear_cross_entropy
from .models import attend_per_example, head_and_body, packs_correctly
from .progress import Progress
from .schedules import lr_curve, make_scheduler
from .sharding import full_states, release, sharded, sharding_copy, unshard
from .strategy import StageContext, Strategy, TrainState

log = logging.getLogger("adaptlang")


def embedding_parameters(model) -> set[int]:
    """ids of the token embedding rows and the LM head: the tensors themselves and the rows a
    strategy trains through peft (TrainableTokens deltas)."""
    ids = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        ids.add(id(head.weight))
    ids |= {id(p) for name, p in model.named_parameters() if "trainable_tokens_delta" in name}
    return ids


def param_groups(model, weight_decay: float, lr: float, embedding_lr_ratio: float = 1.0) -> list[dict]:
    """Decay matrices; never decay norms, biases, or parameters a strategy froze. With
    ``embedding_lr_ratio`` != 1 the embedding rows and the LM head get their own group at
    ``lr * embedding_lr_ratio`` (continued-pretraining practice: 2-10x smaller than the body's);
    the schedule scales every group alike."""
    embeddings = embedding_parameters(model) if embedding_lr_ratio != 1.0 else set()
    decay, no_decay, embed = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (embed if id(p) in embeddings else decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay and not embed:
        raise UserError("no trainable parameters in this stage (every parameter is frozen)")
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    if embed:
        groups.append({"params": embed, "weight_decay": weight_decay, "lr": lr * embedding_lr_ratio})
    return groups


def head_loss(head, hidden, targets):
    """Mean cross-entropy of ``head(hidden)`` against ``targets`` (the labelled positions)."""
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets)


def fused_or(fallback):
    """A head loss: the projection and the cross-entropy fused a chunk of rows at a time where
    the head is a plain linear layer on CPU (adaptlang.fused_loss: 1.6-2.3x faster there),
    ``fallback(head, hidden, targets)`` everywhere else."""
    def head_loss_fn(head, hidden, targets):
        if fuses(head, hidden):
            return linear_cross_entropy(hidden, head.weight, targets)
        return fallback(head, hidden, targets)
    return head_loss_fn


eager_head_loss = fused_or(head_loss)


def loss_on_targets(model, batch: dict, body=None, head_loss_fn=None):
    """Mean next-token cross-entropy over the labelled positions only -- the same value as
    ``model(**batch).loss`` -- but the LM head runs only where there is a label.

    For small multilingual models the vocabulary projection is most of the compute (tiny
    default: 2*128*8000 FLOPs a token against ~0.4M for the body), and instruction prompts
    and padding carry no loss. Falls back to the model's own loss where the shortcut does
    not apply (no separable body/head, logit soft-capping, a distributed wrapper). ``body``:
    a compiled forward of the model's body (``train.compile``), else the body itself;
    ``head_loss_fn``: a compiled ``head_loss`` (``train.compile``), else ``eager_head_loss``."""
    head, own_body = head_and_body(model)
    body = own_body if body is None else body
    if head is None:
        outputs = model(**batch)
        return outputs.loss, outputs
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = body(**inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    loss = (head_loss_fn or eager_head_loss)(head, hidden[:, :-1][keep], targets[keep])
    return loss, SimpleNamespace(loss=loss, hidden_states=hidden)


def build_optimizer(model, tcfg: Any, steps: int, accelerator):
    """AdamW over ``param_groups`` and the learning-rate schedule, prepared by accelerate
    (which may wrap all three); returns (model, optimizer, scheduler)."""
    optimizer = torch.optim.AdamW(
        param_groups(model, float(tcfg.weight_decay), float(tcfg.lr), float(tcfg.get("embedding_lr_ratio", 1.0))),
        lr=float(tcfg.lr),
        betas=tuple(tcfg.betas), eps=float(tcfg.eps),
        # the fused kernel (one pass over all tensors) steps the tiny model ~6x faster than torch's
        # default single-tensor loop on CPU (1 thread; far more under load): ~5% of the loop's
        # time. It is what transformers' Trainer uses by default with torch >= 2.8
        **({"fused": True} if fused_optimizer_ok(accelerator.device) else {}),
    )
    warmup = math.ceil(float(tcfg.warmup_ratio) * steps)
    scheduler = make_scheduler(optimizer, tcfg.get("schedule"), warmup, steps, float(tcfg.get("decay_ratio", 0.2)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if hasattr(scheduler, "split_batches"):  # our batch is global and split across ranks: one schedule
        scheduler.split_batches = True       # step per optimizer step, not one per process
    return model, optimizer, scheduler


@dataclass
class Batches:
    """How a micro-step's examples are drawn: the global batch (``size``), identical on every
    rank, of which this rank keeps its contiguous share; packed ``pack_width`` wide or padded."""
    size: int
    accum: int
    world: int
    rank: int
    pad_id: int
    pack_width: int | None
    dtype: torch.dtype
    restore_attention: str | None = None  # switched to adaptlang.segment_attention: the model's own, put back at the end

    def draw(self, stream: ExampleStream) -> dict:
        share = self.size // self.world
        examples = [next(stream) for _ in range(self.size)]
        return make_batch(examples[self.rank * share:(self.rank + 1) * share], self.pad_id, self.pack_width,
                          self.segments)

    @property
    def segments(self) -> bool:
        """Packed rows carry their examples' lengths (adaptlang.segment_attention)."""
        return self.restore_attention is not None

    def on_device(self, batch: dict, device) -> dict:
        batch = {k: v.to(device) for k, v in batch.items()}
        if "attention_mask" in batch and batch["attention_mask"].dtype.is_floating_point:
            batch["attention_mask"] = batch["attention_mask"].to(self.dtype)
        return batch

    @property
    def layout(self) -> str:
        if not self.pack_width:
            return "padding"
        return ("per-example attention + per-example positions" if self.segments
                else "block-diagonal mask + per-example positions")


def plan_batches(tokenizer, model, tcfg: Any, accelerator, stage: str) -> Batches:
    """The stage's ``Batches``; packing is turned off for a family that cannot keep packed
    examples apart. Packed, a model on SDPA attends per example (adaptlang.segment_attention:
    no score between two examples is computed) once it passes the same probe that way."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch_size, world = int(tcfg.batch_size), accelerator.num_processes
    if batch_size % world:
        raise UserError(f"stage {stage}: train.batch_size={batch_size} (the global batch) must be divisible "
                        f"by the number of processes ({world})")
    pack_width = int(tcfg.max_length) if tcfg.get("packing", False) else None
    if pack_width and not packs_correctly(model, pad_id):
        pack_width = None  # this family cannot keep packed examples apart: pad them instead
        log.info("stage %s: packing off for %s (its attention cannot take a block-diagonal mask with "
                 "per-example positions); examples are padded", stage, type(model).__name__)
    restore = attend_per_example(model, pad_id) if pack_width else None
    return Batches(batch_size, int(tcfg.grad_accum), world, accelerator.process_index, pad_id, pack_width,
                   next(model.parameters()).dtype, restore_attention=restore)


def forward_path(model, bare, strategies: list[Strategy], compile_: bool, accelerator):
    """``forward(batch) -> (loss, outputs)`` for the loop, and the stage's ``Compilation``
    (None without ``train.compile``). ``model``: as prepared by accelerate; ``bare``: unwrapped."""
    # the LM-head shortcut (loss_on_targets) needs the bare model (a DDP wrapper must run its own
    # forward) and no strategy that reads the logits; FSDP2 shards in place (model is bare), but
    # its root module must run its own forward to gather the embedding and head shards
    fused = (model is bare and accelerator.distributed_type != DistributedType.FSDP
             and not any(getattr(s, "needs_logits", False) for s in strategies))
    # train.compile: torch.compile the forward (the body on the fused path); the parameters,
    # the module tree and the saved model stay those of the plain model
    compilation = Compilation() if compile_ else None
    compiled = compilation(head_and_body(model)[1] if fused else model) if compile_ else None
    if fused:
        # under train.compile the eager fused head loss still wins where it applies (CPU: it beat
        # Inductor's code for the head, bench/perf_compile.py); the compiled head_loss elsewhere
        compiled_head_loss = fused_or(compilation(head_loss)) if compile_ else None
        return (lambda batch: loss_on_targets(model, batch, compiled, compiled_head_loss)), compilation

    def forward(batch):
        outputs = (compiled or model)(**batch)
        return outputs.loss, outputs
    return forward, compilation


@dataclass
class Tally:
    """What the loop counts; saved in every checkpoint, restored on resume."""
    first_step: int = 1
    tokens: int = 0
    loss_tokens: int = 0
    losses: list[float] = field(default_factory=list)
    seconds_before: float = 0.0  # of the loop, before the checkpoint it resumed from
    spent: dict = field(default_factory=lambda: {"data_seconds": 0.0, "strategy_seconds": 0.0})  # drawing +
    # collating batches; inside strategy hooks

    @contextmanager
    def timed(self, key: str):
        t = time.perf_counter()
        yield
        self.spent[key] += time.perf_counter() - t

    def progress(self, seconds: float) -> dict:
        return {"tokens": self.tokens, "loss_tokens": self.loss_tokens, "losses": self.losses, "seconds": seconds,
                **self.spent}


def resume_tally(checkpointer: Checkpointer | None, model, optimizer, scheduler, stream, strategies,
                 stage: str, accelerator) -> Tally:
    """The loop's counts from ``checkpointer``'s latest checkpoint, which also restores the model,
    the optimizer, the schedule, the stream, the strategies and the RNGs; fresh without one."""
    if sharded(accelerator) and checkpointer is not None and not checkpointer.fresh and checkpointer.candidates():
        # whole state dicts, every rank takes its shard; only with one to load: gathering the state of an
        # optimizer that has none yet initializes it (torch steps it once at lr 0, counting a step for AdamW)
        model, optimizer = full_states(model, optimizer)
    resumed = checkpointer.load(model, optimizer, scheduler, stream, strategies) if checkpointer is not None else None
    if not resumed:
        return Tally()
    log.info("stage %s: resumed after step %d", stage, resumed["step"])
    return Tally(resumed["step"] + 1, resumed["tokens"], resumed["loss_tokens"], resumed["losses"],
                 resumed["seconds"], {k: resumed.get(k, 0.0) for k in Tally().spent})


def global_share(loss, n_tokens: int, n_loss: int, accelerator):
    """Several processes: weight this rank's mean loss by its share of the global labelled
    tokens (counts all-reduced); returns (loss, global tokens, global labelled tokens)."""
    counts = accelerator.reduce(torch.tensor([n_tokens, n_loss], device=accelerator.device), "sum")
    n_tokens, global_loss_tokens = int(counts[0]), int(counts[1])
    loss = (loss if n_loss else torch.nan_to_num(loss)) * (n_loss * accelerator.num_processes / global_loss_tokens)
    return loss, n_tokens, global_loss_tokens


def show_step(bar: Progress, accelerator, stage: str, step: int, loss: float, lr: float, tokens_per_second: float):
    """The progress line (and train.log) every ``train.log_every``; the trackers every step
    (``step``: across the run's stages)."""
    line = bar.update(1, loss=f"{loss:.4f}", lr=f"{lr:.2e}", **{"tokens/s": f"{tokens_per_second:,.0f}"})
    if line:
        log.info("%s", line)
    if accelerator.trackers:
        accelerator.log({"train/loss": loss, "train/lr": lr, "train/tokens_per_second": tokens_per_second,
                         f"train/{stage}/loss": loss}, step=step)


def hand_back(model, accelerator, checkpointing: bool, plain=None, attention: str | None = None):
    """The trained model, unwrapped and as it came: no gradient checkpointing, no input-grad hook,
    its own attention implementation (``attention``, where the stage switched it);
    sharded, the model as it came (``plain``), its parameters gathered whole on every rank."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if attention is not None:
        unwrapped.set_attn_implementation(attention)
    if plain is not None:
        unwrapped = unshard(unwrapped, plain)
    if checkpointing:
        unwrapped.gradient_checkpointing_disable()
        if getattr(unwrapped, "_require_grads_hook", None) is not None:
            unwrapped.disable_input_require_grads()
    accelerator.free_memory()
    return unwrapped


def save_checkpoint(checkpointer: Checkpointer, step: int, model, optimizer, scheduler, stream, strategies,
                    progress: dict, accelerator) -> None:
    """Rank 0 writes the checkpoint; sharded, every rank first gathers the whole state."""
    if sharded(accelerator):
        model, optimizer = full_states(model, optimizer)
    if accelerator.is_main_process:
        checkpointer.save(step, model, optimizer, scheduler, stream, strategies, progress)


def figures(tally: Tally, seconds: float, steps: int, batches: Batches, compilation: Compilation | None,
            stage: str) -> dict:
    """The stage's training figures (metrics.json: ``stages.<stage>.train``)."""
    if not tally.losses:
        raise RuntimeError(f"stage {stage}: no training step was run")
    tail = tally.losses[-max(1, steps // 10):]
    return {
        "steps": steps,
        "examples": steps * batches.size * batches.accum,
        "tokens": tally.tokens,
        "loss_tokens": tally.loss_tokens,
        "seconds": round(seconds, 3),
        "packing": batches.layout,
        "tokens_per_second": round(tally.tokens / max(seconds, 1e-9), 1),
        **{k: round(v, 3) for k, v in tally.spent.items()},
        **({"compiled": compilation.active} if compilation is not None else {}),
        "first_loss": round(tally.losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
    }


def train_stage(model, tokenizer, stream: ExampleStream, strategies: list[Strategy], tcfg: Any,
                steps: int, accelerator, ctx: StageContext, checkpointer: Checkpointer | None = None,
                step_offset: int = 0) -> tuple[Any, dict]:
    """Train one stage; resumes from ``checkpointer``'s latest checkpoint when there is one.
    Returns the trained (unwrapped) model and the stage's figures.

    ``step_offset``: optimizer steps of the run's earlier stages, so that the experiment
    trackers (``train.report_to``) see one increasing step across stages."""
    plain = None
    if sharded(accelerator):  # FSDP shards a copy; the model's own parameters are gathered back at the end
        plain, model = model, sharding_copy(model)
    model, optimizer, scheduler = build_optimizer(model, tcfg, steps, accelerator)
    if plain is not None:
        release(plain)
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)
    state = TrainState(step=0, total_steps=steps, model=accelerator.unwrap_model(model),
                       optimizer=inner_optimizer, ctx=ctx)
    batches = plan_batches(tokenizer, state.model, tcfg, accelerator, ctx.name)
    forward, compilation = forward_path(model, state.model, strategies, bool(tcfg.get("compile", False)), accelerator)
    tally = resume_tally(checkpointer, state.model, inner_optimizer, scheduler, stream, strategies, ctx.name,
                         accelerator)
    state.step = tally.first_step - 1  # steps done: a resumed stage's hooks see its checkpoint's (A-GEM seeds by it)
    checkpointing = bool(tcfg.get("gradient_checkpointing", False))
    if checkpointing:  # recompute activations in the backward pass: memory for time
        state.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    world, accum, max_grad_norm = batches.world, batches.accum, float(tcfg.max_grad_norm)
    model.train()
    start = time.perf_counter() - tally.seconds_before
    bar = Progress(f"stage {ctx.name}", steps, unit="step", every=int(tcfg.log_every), seconds=tcfg.get("log_seconds"),
                   initial=tally.first_step - 1, enabled=accelerator.is_local_main_process)
    for step in range(tally.first_step, steps + 1):
        step_loss = 0.0
        for _ in range(accum):
            with tally.timed("data_seconds"):
                batch = batches.draw(stream)
            n_tokens = int(batch.pop("num_tokens"))
            batch = batches.on_device(batch, accelerator.device)
            loss, outputs = forward(batch)
            n_loss = int((batch["labels"][:, 1:] != -100).sum())
            if world > 1:
                loss, n_tokens, n_loss = global_share(loss, n_tokens, n_loss, accelerator)
            with tally.timed("strategy_seconds"):
                for strategy in strategies:
                    extra = strategy.extra_loss(batch, outputs, state)
                    if extra is not None:
                        loss = loss + extra
            accelerator.backward(loss / accum)
            step_loss += (accelerator.reduce(loss.detach(), "mean") if world > 1 else loss).item() / accum
            tally.tokens += n_tokens
            tally.loss_tokens += n_loss
        with tally.timed("strategy_seconds"):
            for strategy in strategies:
                strategy.on_gradients(state)
        if max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state.step, state.loss = step, step_loss
        with tally.timed("strategy_seconds"):
            for strategy in strategies:
                strategy.on_step_end(state)
        tally.losses.append(step_loss)
        if not math.isfinite(step_loss):
            raise RuntimeError(f"stage {ctx.name}: loss is {step_loss} at step {step} (lower train.lr?)")
        elapsed = time.perf_counter() - start
        show_step(bar, accelerator, ctx.name, step_offset + step, step_loss, scheduler.get_last_lr()[0],
                  tally.tokens / max(elapsed, 1e-9))
        if checkpointer is not None and checkpointer.due(step, steps):
            save_checkpoint(checkpointer, step, state.model, inner_optimizer, scheduler, stream, strategies,
                            tally.progress(elapsed), accelerator)
    bar.close()
    seconds = time.perf_counter() - start
    stats = {**figures(tally, seconds, steps, batches, compilation, ctx.name), "lr_by_step": lr_curve(tcfg, steps)}
    return hand_back(model, accelerator, checkpointing, plain, batches.restore_attention), stats
