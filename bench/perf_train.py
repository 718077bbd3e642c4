"""Training throughput of adaptlang's loop against the tools a user would pick instead.

Measured in one run on the same model (the tiny default), data (the default instruct
stage's variable-length mixture: translation instructions + replayed English
instructions, 1:1), batch size, optimizer and schedule:

  * adaptlang  -- adaptlang.train.train_stage (packing on), with no strategy
  * trainer    -- transformers Trainer with dynamic padding (DataCollatorForSeq2Seq)
  * bare       -- a bare PyTorch loop over the same packed batches adaptlang builds
  * strategies -- adaptlang with af+replay active (overhead against `adaptlang`)

Prints useful (non-padding) tokens per second for each and the ratios, then the model
FLOP utilisation against the measured fp32 matmul peak -- on this mixture, where prompts carry
no loss, and on language-modelling blocks, where every token does -- and the top ops of a
profile.

    python bench/perf_train.py [--steps 40] [--batch-size 16] [--repeats 3] [--model smollm2-135m|DIR] [--max-length 192]
                               [--trainer-only]   # adaptlang against the Trainer alone (a real checkpoint's long runs)
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from _emit import emit  # noqa: E402
from _flops import executed_flops, matmul_peak  # noqa: E402


def setup(batch_size: int, model_name: str | None = None):
    from adaptlang import instructions, load_config
    from adaptlang.languages import LanguageSet
    from adaptlang.named_models import is_named
    from adaptlang.pipeline import initial_model

    chosen = [] if model_name is None else [f"model={model_name}"] if is_named(model_name) else \
        ["model=pretrained", f"model.name_or_path={model_name}"]
    cfg = load_config([f"train.batch_size={batch_size}", *chosen])
    languages = LanguageSet.from_config(cfg.languages)
    model, tokenizer = initial_model(cfg, languages)
    new = instructions.build("translation", languages.resolve("adapting"), cfg, 0)
    past = instructions.build("english", ["en"], cfg, 0)
    examples = []
    for a, b in zip(new[:2000], past[:2000]):
        examples += [a, b]  # the 1:1 replay mixture
    encoded = instructions.encode_all(examples, tokenizer, MAX_LENGTH)
    return cfg, model, tokenizer, encoded


def lm_blocks(data, size: int) -> list[dict]:
    """The examples' tokens run together and cut into ``size``-token language-modelling blocks
    (no labels: every token is predicted), the pretrain and adapt stages' kind of example."""
    stream = [t for ids in data["input_ids"] for t in ids]
    return [{"input_ids": stream[i:i + size]} for i in range(0, len(stream) - size + 1, size)]


def tcfg(cfg, packing=True):
    return OmegaConf.merge(cfg.train, {"packing": packing, "max_length": MAX_LENGTH, "lr": 5e-4, "log_every": 10**9})


def ctx(cfg):
    from adaptlang.strategy import StageContext

    return StageContext(name="bench", index=0, seed=0, train=tcfg(cfg), config=cfg)


def run_adaptlang(cfg, model, tokenizer, data, steps, strategies=()):
    from accelerate import Accelerator

    from adaptlang.data import ExampleStream
    from adaptlang.train import train_stage

    stream = ExampleStream(data, 0)
    c = ctx(cfg)
    c.tokenizer = tokenizer
    for s in strategies:
        stream = s.setup_data(stream, c)
    start = time.perf_counter()
    _, stats = train_stage(model, tokenizer, stream, list(strategies), tcfg(cfg), steps, Accelerator(cpu=True), c)
    LAST_STATS.update(stats)
    return stats["tokens"], time.perf_counter() - start


LAST_STATS: dict = {}
MAX_LENGTH = 192  # tokens an example is cut to (the default instruct stage's train.max_length); --max-length
TRAINER_PADDED: dict = {}  # tokens the Trainer's padded batches hold (padding included), over all its runs


def run_bare(cfg, model, tokenizer, data, steps):
    from transformers import get_cosine_schedule_with_warmup

    from adaptlang.batching import make_batch
    from adaptlang.data import ExampleStream

    stream = ExampleStream(data, 0)
    bs = int(cfg.train.batch_size)
    batches = [make_batch([next(stream) for _ in range(bs)], tokenizer.pad_token_id, MAX_LENGTH) for _ in range(steps)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 10), steps)
    tokens = 0
    model.train()
    start = time.perf_counter()
    for batch in batches:
        batch = dict(batch)
        tokens += int(batch.pop("num_tokens"))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return tokens, time.perf_counter() - start


def drawn(data, n: int):
    """The first ``n`` examples adaptlang's loop draws (ExampleStream, seed 0), in its order."""
    from datasets import Dataset

    from adaptlang.data import ExampleStream

    stream = ExampleStream(data, 0)
    return Dataset.from_list([{k: list(v) for k, v in next(stream).items()} for _ in range(n)])


def run_trainer(cfg, model, tokenizer, data, steps, tmp):
    """The Trainer on the very examples, in the same order and batches, that adaptlang's loop draws."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    base = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    counted = {"tokens": 0}

    def collator(features):
        counted["tokens"] += sum(len(f["input_ids"]) for f in features)
        TRAINER_PADDED["tokens"] = TRAINER_PADDED.get("tokens", 0) + max(len(f["input_ids"]) for f in features) * len(features)
        return base(features)

    args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=int(cfg.train.batch_size), max_steps=steps,
                             learning_rate=5e-4, weight_decay=0.01, adam_beta2=0.95, lr_scheduler_type="cosine",
                             warmup_steps=max(1, steps // 10), max_grad_norm=1.0, logging_steps=10**6, save_strategy="no",
                             report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
                             train_sampling_strategy="sequential")
    same = drawn(data, steps * int(cfg.train.batch_size))
    trainer = Trainer(model=model, args=args, train_dataset=same, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    return counted["tokens"], time.perf_counter() - start


def loop_flops(model, tokens: int, loss_tokens: int, seq_len: int) -> float:
    """Executed FLOPs of training ``model`` (all of it) on ``tokens`` tokens (bench/_flops.py)."""
    c = model.config
    body = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    return executed_flops(body, model.lm_head.weight.numel(), c.num_hidden_layers, c.hidden_size, seq_len, tokens,
                          loss_tokens)


def main() -> None:
    import copy
    import tempfile

    from adaptlang.composition import build_strategy

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternating; the median counts")
    parser.add_argument("--model", help="a named checkpoint (smollm2-135m) or a model folder (default: the tiny model)")
    parser.add_argument("--max-length", type=int, default=192,
                        help="tokens an example is cut to and the packing width (default: the instruct stage's 192)")
    parser.add_argument("--trainer-only", action="store_true",
                        help="run adaptlang and the HF Trainer only: no bare loop, strategies, LM blocks or profile")
    args = parser.parse_args()
    global MAX_LENGTH
    MAX_LENGTH = args.max_length
    cfg, model, tokenizer, data = setup(args.batch_size, args.model)
    lengths = [len(x) for x in data["input_ids"]]
    print(f"data: {len(data)} examples, mean length {sum(lengths) / len(lengths):.0f} tokens "
          f"(min {min(lengths)}, max {max(lengths)}); {args.steps} steps x batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads")
    run_bare(cfg, copy.deepcopy(model), tokenizer, data, 3)  # warm-up (allocator, kernels)
    variants = {
        "adaptlang": lambda: run_adaptlang(cfg, copy.deepcopy(model), tokenizer, data, args.steps),
        "bare loop": lambda: run_bare(cfg, copy.deepcopy(model), tokenizer, data, args.steps),
        "HF Trainer": lambda: run_trainer(cfg, copy.deepcopy(model), tokenizer, data, args.steps, tmp),
        "adaptlang af+replay": lambda: run_adaptlang(cfg, copy.deepcopy(model), tokenizer, data, args.steps,
                                                     [build_strategy("replay", size=1000), build_strategy("af", every=10)]),
    }
    if args.trainer_only:
        variants = {k: variants[k] for k in ("adaptlang", "HF Trainer")}
    runs: dict[str, list] = {k: [] for k in variants}
    hooks: dict[str, list] = {k: [] for k in variants}
    names = list(variants)
    loop_seconds: list[float] = []  # adaptlang's own time in train_stage, without set-up and the final gc
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # the order rotates every repeat; each loop's median run counts
            for name in names[r % len(names):] + names[:r % len(names)]:
                LAST_STATS.clear()
                runs[name].append(variants[name]())
                hooks[name].append(LAST_STATS.get("strategy_seconds", 0.0) + LAST_STATS.get("data_seconds", 0.0))
                if name == "adaptlang":
                    plain_stats = dict(LAST_STATS)
                    loop_seconds.append(LAST_STATS["seconds"])
    results = {k: sorted(v, key=lambda r: r[0] / r[1])[len(v) // 2] for k, v in runs.items()}
    rate = {k: t / s for k, (t, s) in results.items()}
    print(f"\n{'loop (median run)':22s} {'tokens':>9s} {'seconds':>8s} {'tokens/s':>9s}  all runs, tokens/s")
    for k, (t, s) in results.items():
        print(f"{k:22s} {t:9d} {s:8.2f} {rate[k]:9.0f}  {', '.join(f'{a / b:.0f}' for a, b in runs[k])}")
    print(f"\nadaptlang / HF Trainer        = {rate['adaptlang'] / rate['HF Trainer']:.2f}x  (target >= 2.0)")
    if not args.trainer_only:
        print(f"adaptlang / bare loop         = {rate['adaptlang'] / rate['bare loop']:.2f}x  (target >= 0.95)")
        print(f"af+replay / no strategy       = {rate['adaptlang af+replay'] / rate['adaptlang']:.3f}  (target >= 0.95)")
        share = {k: sum(hooks[k]) / sum(sec for _, sec in runs[k]) for k in ("adaptlang", "adaptlang af+replay")}
        print(f"time in strategy hooks + batch drawing: {share['adaptlang af+replay']:.2%} with af+replay, "
              f"{share['adaptlang']:.2%} without")
    peak = matmul_peak()
    mean_len = sum(lengths) / len(lengths)
    flops = loop_flops(model, plain_stats["tokens"], plain_stats["loss_tokens"], int(mean_len))
    achieved = flops / results["adaptlang"][1]
    loop_mfu = flops / sorted(loop_seconds)[len(loop_seconds) // 2] / peak
    print(f"\nfp32 matmul peak {peak / 1e9:.1f} GFLOP/s (1024^3 torch.mm); adaptlang executed {achieved / 1e9:.2f} "
          f"GFLOP/s = MFU {achieved / peak:.1%} over the wall time of train_stage, {loop_mfu:.1%} over its loop's own "
          f"time (no optimizer set-up, no end-of-stage gc) (body 6N + attention on every token, LM head on labelled "
          f"tokens only)")
    # The ratio adaptlang / Trainer can reach at equal FLOP rates: per useful token, the Trainer runs
    # the body on its padding too and the LM head on every position (prompts included).
    useful = sum(t for t, _ in runs["HF Trainer"])
    trainer_flops = loop_flops(model, TRAINER_PADDED["tokens"], TRAINER_PADDED["tokens"], int(mean_len))
    bound = (trainer_flops / useful) / (flops / plain_stats["tokens"])
    print(f"FLOPs per useful token, Trainer / adaptlang = {bound:.2f}: the ratio adaptlang / Trainer at equal FLOP "
          f"rates (Trainer's batches are {useful / TRAINER_PADDED['tokens']:.1%} useful tokens)")
    print(f"adaptlang's packing: {plain_stats['packing']}")
    if args.trainer_only:
        emit("train", tokens_per_second=rate, vs_trainer=rate["adaptlang"] / rate["HF Trainer"], loop_mfu=loop_mfu,
             peak_gflops=peak / 1e9, achieved_gflops=achieved / 1e9, mfu=achieved / peak, flop_bound_vs_trainer=bound,
             max_length=MAX_LENGTH)
        return
    blocks = lm_blocks(data, int(cfg.train.block_size))
    LAST_STATS.clear()
    block_tokens, block_seconds = run_adaptlang(cfg, copy.deepcopy(model), tokenizer, blocks, args.steps)
    block_flops = loop_flops(model, block_tokens, LAST_STATS["loss_tokens"], int(cfg.train.block_size))
    block_mfu, block_loop_mfu = block_flops / block_seconds / peak, block_flops / LAST_STATS["seconds"] / peak
    print(f"language-modelling blocks ({len(blocks)} x {cfg.train.block_size} tokens, every token labelled, as in the "
          f"pretrain and adapt stages): {block_tokens / block_seconds:.0f} tokens/s, "
          f"{block_flops / block_seconds / 1e9:.2f} GFLOP/s = MFU {block_mfu:.1%} "
          f"(loop's own time: {block_loop_mfu:.1%})")
    emit("train", tokens_per_second=rate, lm_blocks_mfu=block_mfu, lm_blocks_loop_mfu=block_loop_mfu,
         loop_mfu=loop_mfu, vs_trainer=rate["adaptlang"] / rate["HF Trainer"],
         vs_bare=rate["adaptlang"] / rate["bare loop"], af_replay=rate["adaptlang af+replay"] / rate["adaptlang"],
         af_replay_loop_share=share["adaptlang af+replay"], plain_loop_share=share["adaptlang"],
         peak_gflops=peak / 1e9, achieved_gflops=achieved / 1e9, mfu=achieved / peak, flop_bound_vs_trainer=bound)
    profile(cfg, copy.deepcopy(model), tokenizer, data)


def profile(cfg, model, tokenizer, data) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run_adaptlang(cfg, model, tokenizer, data, 5)
    print("\nwhere the time goes (5 steps, top ops by self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
