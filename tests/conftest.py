"""Shared fixtures: tiny in-process models (2 layers, d=64), seeded, no downloads."""
from __future__ import annotations

import gc
import os

import pytest
import torch
from omegaconf import OmegaConf

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # parallel workers (pytest -n N) share the cores: one thread each, for the processes they start too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from adaptlang.sources import read_text  # noqa: E402
from adaptlang.languages import CORPORA  # noqa: E402
from adaptlang.models import build_model, train_tokenizer  # noqa: E402

TINY = {"architecture": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "initializer_range": 0.02, "tie_word_embeddings": False}

# Runs in tests are kept small: a few steps, few lines, few eval sentences.
QUICK = ["train.max_steps=3", "model.tokenizer.vocab_size=1500", "model.tokenizer.character_coverage=0.99", "data.max_lines_per_language=60",
         "eval.max_sentences=3", "train.batch_size=4", "train.block_size=32", "train.max_length=64",
         "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1"]


def pytest_collection_finish(session):
    """Every test module is imported: leave the objects made so far (torch, transformers, lm_eval,
    avalanche...) out of later garbage collections. Each stage end collects garbage (accelerate's
    free_memory), 0.3 s a time over these 600,000 objects, a quarter of a tiny run."""
    gc.freeze()


@pytest.fixture(scope="session")
def tokenizer():
    texts = read_text(str(CORPORA / "ntrex128" / "eng-US.txt.gz"), 300)
    texts += read_text(str(CORPORA / "ntrex128" / "rus.txt.gz"), 300)
    return train_tokenizer(texts, OmegaConf.create({"vocab_size": 600}), seed=0)


def make_model(tokenizer, tied: bool = False, seed: int = 0):
    cfg = OmegaConf.create({**TINY, "tie_word_embeddings": tied})
    return build_model(cfg, tokenizer, seed)


@pytest.fixture
def model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture
def tied_model(tokenizer):
    return make_model(tokenizer, tied=True)


def bits(t: torch.Tensor) -> bytes:
    """A tensor's exact bytes: equality means bit for bit."""
    return t.detach().contiguous().cpu().numpy().tobytes()


def train_options(**overrides) -> OmegaConf:
    """The train options the loop-level tests use (no warmup, no schedule effects), plus overrides."""
    base = {"batch_size": 4, "grad_accum": 1, "lr": 1e-2, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8,
            "warmup_ratio": 0.0, "max_grad_norm": 1.0, "log_every": 100}
    return OmegaConf.create({**base, **overrides})


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def stage_ctx(name: str = "stage", index: int = 0, seed: int = 0, config=None, train: dict | None = None,
              tokenizer=None, model=None, stage_languages=()):
    """A StageContext as the stage runner makes it (languages from ``config`` when given)."""
    from adaptlang.languages import LanguageSet
    from adaptlang.stage_runner import adhoc_stage
    from adaptlang.strategy import StageContext

    stage = adhoc_stage(name, train={"batch_size": 4, "max_length": 64, **(train or {})}, index=index)
    languages = LanguageSet.from_config(config.languages) if config is not None else None
    return StageContext(name=name, index=index, seed=seed, train=OmegaConf.create(stage.train), languages=languages,
                        stage_languages=list(stage_languages), config=config, tokenizer=tokenizer, model=model)


def run_test_stage(model, tokenizer, strategies, stream, name: str = "stage", index: int = 0, steps: int = 5,
                   train: dict | None = None, seed: int = 0, config=None, checkpointer=None):
    """One stage through the stage runner (the pipeline's own lifecycle) on a given stream."""
    from adaptlang.languages import LanguageSet
    from adaptlang.stage_runner import adhoc_stage, run_stage

    stage = adhoc_stage(name, steps, {"batch_size": 4, "max_length": 64, **(train or {})}, index=index)
    languages = LanguageSet.from_config(config.languages) if config is not None else None
    return run_stage(stage, list(strategies), model, tokenizer, seed=seed, languages=languages, config=config,
                     stream=stream, checkpointer=checkpointer)
