"""The training loop: the one place where strategy hooks fire. Reads top to bottom.

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
"""
from __future__ import annotations

import logging
import math
import time
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
from .models import head_and_body, packs_correctly
from .progress import Progress
from .schedules import make_scheduler
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


def train_stage(model, tokenizer, stream: ExampleStream, strategies: list[Strategy], tcfg: Any,
                steps: int, accelerator, ctx: StageContext, checkpointer: Checkpointer | None = None,
                step_offset: int = 0) -> tuple[Any, dict]:
    """Train one stage; resumes from ``checkpointer``'s latest checkpoint when there is one.

    ``step_offset``: optimizer steps of the run's earlier stages, so that the experiment
    trackers (``train.report_to``) see one increasing step across stages."""
    compile_ = bool(tcfg.get("compile", False))
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
    scheduler = make_scheduler(optimizer, tcfg.get("schedule"), warmup, steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if hasattr(scheduler, "split_batches"):  # our batch is global and split across ranks: one schedule
        scheduler.split_batches = True       # step per optimizer step, not one per process
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)
    state = TrainState(step=0, total_steps=steps, model=accelerator.unwrap_model(model),
                       optimizer=inner_optimizer, ctx=ctx)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch_size, accum = int(tcfg.batch_size), int(tcfg.grad_accum)
    world, rank = accelerator.num_processes, accelerator.process_index
    if batch_size % world:
        raise UserError(f"stage {ctx.name}: train.batch_size={batch_size} (the global batch) must be divisible "
                        f"by the number of processes ({world})")
    share = batch_size // world
    pack_width = int(tcfg.max_length) if tcfg.get("packing", False) else None
    if pack_width and not packs_correctly(state.model, pad_id):
        pack_width = None  # this family cannot keep packed examples apart: pad them instead
        log.info("stage %s: packing off for %s (its attention cannot take a block-diagonal mask with "
                 "per-example positions); examples are padded", ctx.name, type(state.model).__name__)
    packing = "block-diagonal mask + per-example positions" if pack_width else "padding"
    dtype = next(state.model.parameters()).dtype
    # the shortcut needs the bare model (a DDP wrapper must run its own forward) and no
    # strategy that reads the logits
    # strategy that reads the logits; FSDP2 shards in place (model is state.model), but its
    # root module must run its own forward to gather the embedding and head shards
    fused = (model is state.model and accelerator.distributed_type != DistributedType.FSDP
             and not any(getattr(s, "needs_logits", False) for s in strategies))
    # train.compile: torch.compile the forward (the body on the fused path); the parameters,
    # the module tree and the saved model stay those of the plain model
    compilation = Compilation() if compile_ else None
    forward = compilation(head_and_body(model)[1] if fused else model) if compile_ else None
    # under train.compile the eager fused head loss still wins where it applies (CPU: it beat
    # Inductor's code for the head, bench/perf_compile.py); the compiled head_loss elsewhere
    compiled_head_loss = fused_or(compilation(head_loss)) if compile_ and fused else None
    tracking = bool(accelerator.trackers)
    tokens = loss_tokens = 0
    losses: list[float] = []
    first_step, seconds_before = 1, 0.0
    spent = {"data_seconds": 0.0, "strategy_seconds": 0.0}  # drawing + collating batches; inside strategy hooks
    if checkpointer is not None:
        resumed = checkpointer.load(state.model, inner_optimizer, scheduler, stream, strategies)
        if resumed:
            first_step = resumed["step"] + 1
            tokens, loss_tokens, losses = resumed["tokens"], resumed["loss_tokens"], resumed["losses"]
            seconds_before = resumed["seconds"]
            spent = {k: resumed.get(k, 0.0) for k in spent}
            log.info("stage %s: resumed after step %d", ctx.name, resumed["step"])
    checkpointing = bool(tcfg.get("gradient_checkpointing", False))
    if checkpointing:  # recompute activations in the backward pass: memory for time
        state.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    start = time.perf_counter() - seconds_before
    bar = Progress(f"stage {ctx.name}", steps, unit="step", every=int(tcfg.log_every), seconds=tcfg.get("log_seconds"),
                   initial=first_step - 1, enabled=accelerator.is_local_main_process)
    for step in range(first_step, steps + 1):
        step_loss = 0.0
        for _ in range(accum):
            t = time.perf_counter()
            examples = [next(stream) for _ in range(batch_size)]  # the global batch, identical on every rank
            batch = make_batch(examples[rank * share:(rank + 1) * share], pad_id, pack_width)
            spent["data_seconds"] += time.perf_counter() - t
            n_tokens = int(batch.pop("num_tokens"))
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if "attention_mask" in batch and batch["attention_mask"].dtype.is_floating_point:
                batch["attention_mask"] = batch["attention_mask"].to(dtype)
            if fused:
                loss, outputs = loss_on_targets(model, batch, forward, compiled_head_loss)
            else:
                outputs = (forward or model)(**batch)
                loss = outputs.loss
            n_loss = int((batch["labels"][:, 1:] != -100).sum())
            if world > 1:  # weight this rank's mean by its share of the global labelled tokens
                counts = accelerator.reduce(torch.tensor([n_tokens, n_loss], device=accelerator.device), "sum")
                n_tokens, global_loss_tokens = int(counts[0]), int(counts[1])
                loss = (loss if n_loss else torch.nan_to_num(loss)) * (n_loss * world / global_loss_tokens)
                n_loss = global_loss_tokens
            t = time.perf_counter()
            for strategy in strategies:
                extra = strategy.extra_loss(batch, outputs, state)
                if extra is not None:
                    loss = loss + extra
            spent["strategy_seconds"] += time.perf_counter() - t
            accelerator.backward(loss / accum)
            step_loss += (accelerator.reduce(loss.detach(), "mean") if world > 1 else loss).item() / accum
            tokens += n_tokens
            loss_tokens += n_loss
        t = time.perf_counter()
        for strategy in strategies:
            strategy.on_gradients(state)
        spent["strategy_seconds"] += time.perf_counter() - t
        if float(tcfg.max_grad_norm) > 0:
            accelerator.clip_grad_norm_(model.parameters(), float(tcfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        state.step, state.loss = step, step_loss
        t = time.perf_counter()
        for strategy in strategies:
            strategy.on_step_end(state)
        spent["strategy_seconds"] += time.perf_counter() - t
        losses.append(step_loss)
        if not math.isfinite(step_loss):
            raise RuntimeError(f"stage {ctx.name}: loss is {step_loss} at step {step} (lower train.lr?)")
        elapsed = time.perf_counter() - start
        lr, tokens_per_second = scheduler.get_last_lr()[0], tokens / max(elapsed, 1e-9)
        line = bar.update(1, loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", **{"tokens/s": f"{tokens_per_second:,.0f}"})
        if line:
            log.info("%s", line)
        if tracking:
            accelerator.log({"train/loss": step_loss, "train/lr": lr, "train/tokens_per_second": tokens_per_second,
                             f"train/{ctx.name}/loss": step_loss}, step=step_offset + step)
        if checkpointer is not None and checkpointer.due(step, steps) and accelerator.is_main_process:
            checkpointer.save(step, state.model, inner_optimizer, scheduler, stream, strategies,
                              {"tokens": tokens, "loss_tokens": loss_tokens, "losses": losses, "seconds": elapsed, **spent})
    bar.close()
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if checkpointing:  # leave the model as it came: no checkpointing, no input-grad hook
        unwrapped.gradient_checkpointing_disable()
        if getattr(unwrapped, "_require_grads_hook", None) is not None:
            unwrapped.disable_input_require_grads()
    accelerator.free_memory()
    tail = losses[-max(1, steps // 10):]
    if not losses:
        raise RuntimeError(f"stage {ctx.name}: no training step was run")
    return unwrapped, {
        "steps": steps,
        "examples": steps * batch_size * accum,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "seconds": round(seconds, 3),
        "packing": packing,
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        **{k: round(v, 3) for k, v in spent.items()},
        **({"compiled": compilation.active} if compilation is not None else {}),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
    }
