"""Downstream tasks through lm-evaluation-harness (``lm_eval`` 0.4.x), per language and class.

The AF paper (active-forgetting-decoder-llms.txt, section 4 and its appendix) evaluates
downstream ability with lm-evaluation-harness at its default settings (XNLI, XCOPA,
Belebele, XQuAD, MLQA, XL-Sum) per language class. Here the harness is used as a library on
the stage's in-memory model and tokenizer (``HFLM(pretrained=model, tokenizer=...)``: no
reload from disk, no hub), with ``eval.lm_eval``:

* ``tasks``: harness task, group or tag names; ``xcopa`` and ``sib200`` ship with vendored
  data (``corpora/xcopa``, ``corpora/sib200``); ``af_paper`` is the paper's suite (``SUITES``).
  XCOPA uses the harness's own YAMLs and prompt (its ``default_<lang>.yaml``) with the data
  files swapped for the vendored copy (``val`` = few-shot split, ``test`` = score).
  SIB-200 is ``harness_tasks/sib200.yaml``, expanded per language of the run's language set
  that has it; its text IS FLORES-200 text, so test rows whose text is in the FLORES devtest
  training pool (lines 0-499, ``sources.FLORES_POOL``) are always dropped (the same rule for
  every run keeps runs comparable) and counted per language (``n_dropped_flores_pool``).
* ``include_path``: folders or files of the user's own harness task YAMLs (the way to add a
  task: no code); ``local_data``: task/group name -> a folder holding
  ``<task>/<split>.jsonl`` (or ``<dataset_name>/...``; ``val``/``dev`` stand for
  ``validation``), which replaces the task's hub dataset for each of its leaf tasks.
* ``num_fewshot``, ``limit`` (examples per task and language), ``batch_size``.

Each leaf task is one language: ``metadata.language`` in its YAML when given, else a
language code found in its name or ``dataset_name`` (ISO code or FLORES code of
``languages.tsv``). Metrics are named ``<task>_<metric>`` (``xcopa_acc``) with the harness's
``<task>_<metric>_stderr``; ``<task>`` is the name asked for (a group: ``xcopa``, ``sib200``), or,
for a single-language task asked by its own name, that name without its language
(``xcopa_et`` -> ``xcopa``, ``senti_sw`` -> ``senti``), so that it shares the metric. Classes: the run's language classes (pretraining / adapting /
other; ``unlisted`` for a language outside the set) and the NusaX-style status
(pretrained / seen / unseen, ``classify.language_status``), each an unweighted mean over its
languages; the stderr of that mean (sqrt(sum se^2) / n) is in ``class_stderr`` (kept out of
``classes`` so that the forgetting table differences scores, not errors). ``leakage``: per task and
language, how many evaluation documents have a text field equal to a line of the run's
training text (``in_training_text``) or of the FLORES pool (``in_flores_pool``).

The harness runs through ``lm_eval.evaluator.evaluate`` (not ``simple_evaluate``, which reseeds
Python's, numpy's and torch's global generators): few-shot examples are drawn with the run's
seed (``set_fewshot_seed``), and the global random streams are restored afterwards, so adding
this benchmark does not change what the next stage trains on.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import json
import logging
import math
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, listing, suggest
from ..languages import CORPORA
from ..sources import FLORES_POOL, flores_lines, line_limit, read_text, training_source
from ._common import register_benchmark
from ._scoring import score_shared_prompt
from .classify import STATUSES, language_status

HERE = Path(__file__).parent / "harness_tasks"
# The AF paper's Appendix C prompts as harness tasks (af_xcopa, af_belebele, af_xquad, af_mlqa:
# groups of per-language tasks, harness_tasks/af_paper/_generate_configs.py writes them)
PAPER_TASKS = HERE / "af_paper"
SHIPPED = ("xcopa", "sib200", "af_xcopa")
# The AF paper's downstream suite: the 6 tasks of Aggarwal et al. (2024) whose prompts its
# Appendix C prints (XNLI, XCOPA, Belebele, XQuAD, MLQA, XL-Sum; translation is flores_4shot),
# with those prompts (PAPER_TASKS). XNLI keeps the harness's prompt: its figure is missing from
# our copy of the paper. XL-Sum is not a task of lm-evaluation-harness 0.4.x; add it with an
# include_path YAML (docs/lm-eval.md). XStoryCloze is not in the paper's suite.
SUITES = {"af_paper": ["xnli", "af_xcopa", "af_belebele", "af_xquad", "af_mlqa"]}
SPLIT_ALIASES = {"validation": ("validation", "val", "dev"), "test": ("test",), "train": ("train",)}
EXTENSIONS = (".jsonl", ".json")


def _harness():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError("benchmark lm_eval needs lm-evaluation-harness: pip install 'adaptlang[lm_eval]' "
                        "(in a clone: pip install -e \".[lm_eval]\")") from None
    import lm_eval.tasks as tasks

    return Path(tasks.__file__).parent


@functools.lru_cache(maxsize=8)
def _manager(include: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include) or None, include_defaults=defaults)


def _options(cfg) -> dict:
    o = dict(cfg.eval.get("lm_eval") or {})
    tasks = o.get("tasks") or []
    names = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
    expanded = []
    for n in names:
        expanded += SUITES.get(n, [n])
    include = [str(p) for p in (o.get("include_path") or [])]
    if any(n.startswith("af_") for n in expanded):
        include.append(str(PAPER_TASKS))
    return {"tasks": list(dict.fromkeys(expanded)), "num_fewshot": int(o.get("num_fewshot") or 0),
            "limit": None if o.get("limit") is None else int(o["limit"]),
            "batch_size": int(o.get("batch_size") or 32),
            "shared_prompt": bool(o.get("shared_prompt", True)),
            "include_path": include,
            "local_data": {str(k): str(v) for k, v in (o.get("local_data") or {}).items()}}


def _index_for(names: list[str], opts: dict):
    """A TaskManager that knows every name: the user's include paths alone when they suffice
    (fast), else with the harness's own 14k tasks (about 10 s to index)."""
    include = tuple(opts["include_path"])
    if include:
        tm = _manager(include, False)
        if all(n in tm.task_index for n in names):
            return tm
    return _manager(include, True)


def _leaves(tm, name: str) -> list[str]:
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = tm.task_index.get(name)
    if entry is None:
        return []
    if entry.kind == Kind.TAG:
        return [leaf for t in sorted(entry.tags) for leaf in (_leaves(tm, t) or [t])]
    if entry.kind == Kind.GROUP:
        raw = entry.cfg or load_yaml(entry.yaml_path, resolve_func=False)
        out = []
        for child in raw.get("task") or []:
            child = child.get("task") if isinstance(child, dict) else child
            if isinstance(child, str):
                out += _leaves(tm, child) or [child]
        return out
    return [name]


def _find_file(folder: Path, leaf: str, dataset_name, split: str) -> Path | None:
    for sub in (leaf, str(dataset_name) if dataset_name else None, "."):
        if sub is None:
            continue
        for alias in SPLIT_ALIASES.get(split, (split,)):
            for ext in EXTENSIONS:
                path = folder / sub / f"{alias}{ext}"
                if path.is_file():
                    return path
    return None


def _harness_xcopa(tm, leaf: str) -> bool:
    entry = tm.task_index.get(leaf)
    return bool(entry and entry.yaml_path and entry.yaml_path.parent == _harness() / "xcopa")


def _local_spec(tm, leaf: str, folder: Path) -> dict:
    """The leaf task's own config with its dataset replaced by local JSON files."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = tm.task_index.get(leaf)
    if entry is None or entry.yaml_path is None:
        raise UserError(f"eval.lm_eval.local_data: task '{leaf}' has no YAML config to take local data")
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    for key in ("group", "tag", "task_list"):
        cfg.pop(key, None)
    files = {}
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        split = cfg.get(key)
        if split and split not in files:
            found = _find_file(folder, leaf, cfg.get("dataset_name"), str(split))
            if found is not None:
                files[str(split)] = str(found)
    scored = cfg.get("test_split") or cfg.get("validation_split")
    if scored not in files:
        raise UserError(f"eval.lm_eval.local_data: no {scored}.jsonl for task '{leaf}' in {folder} "
                        f"(looked in {folder / leaf} and {folder / str(cfg.get('dataset_name'))})")
    if cfg.get("fewshot_split") and cfg["fewshot_split"] not in files:
        cfg.pop("fewshot_split")
    for key in ("training_split", "validation_split"):
        if cfg.get(key) and cfg[key] not in files:
            cfg.pop(key)
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    cfg.update(task=leaf, dataset_path="json", dataset_kwargs={"data_files": files},
               metadata={**meta, "hub_dataset_name": cfg.pop("dataset_name", None)})
    return cfg


def _language_of(leaf: str, spec, table: dict) -> str | None:
    meta = spec.get("metadata") if isinstance(spec, dict) else None
    if isinstance(meta, dict) and meta.get("language"):
        return str(meta["language"])
    flores = {lang.flores: code for code, lang in table.items() if lang.flores}
    dataset_name = ""
    if isinstance(spec, dict):
        dataset_name = str(spec.get("dataset_name") or (meta or {}).get("hub_dataset_name") or "")
    parts = re.split(r"[_.\-]", leaf) + (re.split(r"[_.\-]", dataset_name) if dataset_name else [])
    for i in range(len(parts) - 1, 0, -1):  # FLORES codes: two parts (eng_Latn)
        if f"{parts[i - 1]}_{parts[i]}" in flores:
            return flores[f"{parts[i - 1]}_{parts[i]}"]
    for p in parts[1:] + parts[:1]:
        if p in table:
            return p
    if re.fullmatch(r"[a-z]{2,3}", dataset_name):
        return dataset_name  # a language outside the table (xcopa ht, qu)
    return parts[-1] if len(parts) > 1 and re.fullmatch(r"[a-z]{2,3}", parts[-1]) else None  # xquad_el


def _sib200_languages(languages) -> tuple[dict[str, str], dict[str, str]]:
    """code -> FLORES code for the run's languages that SIB-200 has, and the others with why."""
    have, skipped = {}, {}
    for code in languages.all_codes():
        flores = languages.table[code].flores if code in languages.table else None
        if flores and (CORPORA / "sib200" / flores / "test.tsv.gz").is_file():
            have[code] = flores
        else:
            skipped[code] = "no SIB-200 data (SIB-200 is FLORES-200 text; this language has none vendored)"
    return have, skipped


def _read_tsv(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return [{"index_id": r["index_id"], "category": r["category"], "text": r["text"].strip()}
                for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _sib200_specs(languages, folder: Path) -> tuple[list[dict], dict, dict]:
    """Per-language task configs on filtered copies written into ``folder``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    base = load_yaml(HERE / "sib200.yaml", resolve_func=True)
    have, skipped = _sib200_languages(languages)
    specs, dropped = [], {}
    for code, flores in have.items():
        pool = set(flores_lines(flores, FLORES_POOL)) if (CORPORA / "flores200" / "devtest" / f"{flores}.devtest.gz").is_file() else set()
        files = {}
        for split in ("train", "dev", "test"):
            rows = _read_tsv(CORPORA / "sib200" / flores / f"{split}.tsv.gz")
            rows.sort(key=lambda r: int(r["index_id"]))  # the files are grouped by topic; `limit` takes the first rows
            if split == "test":
                kept = [r for r in rows if r["text"] not in pool]
                dropped[code] = len(rows) - len(kept)
                rows = kept
            path = folder / "sib200" / flores / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            files[split] = str(path)
        spec = dict(base, task=f"sib200_{flores}", dataset_kwargs={"data_files": files},
                    metadata={**(base.get("metadata") or {}), "language": code})
        specs.append(spec)
    return specs, dropped, skipped


def _plan_specs(opts: dict, languages, folder: Path | None) -> tuple[list[tuple[str, str, object]], dict, dict]:
    """[(task name asked for, leaf name, spec for the harness)], dropped counts, skipped.
    With ``folder`` None only checks (nothing is written, SIB-200 is not expanded)."""
    _harness()
    local = {"xcopa": str(CORPORA / "xcopa"), "af_xcopa": str(CORPORA / "xcopa"), **opts["local_data"]}
    out, dropped, skipped = [], {}, {}
    tm = _manager_for(opts)
    for name in opts["tasks"]:
        if name == "sib200":
            if folder is not None:
                specs, dropped, skip = _sib200_specs(languages, folder)
                skipped.update({f"{c} (sib200)": w for c, w in skip.items()})
                out += [(name, s["task"], s) for s in specs]
            continue
        leaves = _leaves(tm, name)
        if not leaves:
            known = sorted(set(tm.all_tasks) | set(SHIPPED) | set(SUITES))
            near = suggest(name, known)
            raise UserError(f"eval.lm_eval.tasks: unknown task '{name}'.{near or ' No close name.'} "
                            f"Shipped: {listing(SHIPPED)}; suites: {listing(SUITES)}; or any lm-evaluation-harness "
                            "task name, or a YAML in eval.lm_eval.include_path")
        root = next((k for k in local if k == name or name.startswith(k + "_")), None)
        for leaf in leaves:
            key = root or next((k for k in local if leaf == k or leaf.startswith(k + "_")), None)
            if key == "xcopa" and "xcopa" not in opts["local_data"] and not _harness_xcopa(tm, leaf):
                key = None  # the vendored copy serves the harness's own XCOPA tasks only
            if key is not None:
                folder_k = Path(local[key])
                if not folder_k.is_dir():
                    raise UserError(f"eval.lm_eval.local_data.{key}: '{folder_k}' is not a folder")
                out.append((name, leaf, _local_spec(tm, leaf, folder_k)))
            else:
                out.append((name, leaf, leaf))
    return out, dropped, skipped


def check(cfg, languages) -> None:
    """At plan time: every task name known, include paths present, every task's data readable."""
    opts = _options(cfg)
    if not opts["tasks"]:
        raise UserError(f"eval.lm_eval.tasks is empty. Shipped: {listing(SHIPPED)}; suites: {listing(SUITES)}")
    for p in opts["include_path"]:
        if not Path(p).exists():
            raise UserError(f"eval.lm_eval.include_path: '{p}' does not exist")
    planned, _, _ = _plan_specs(opts, languages, None)
    user_or_hub = [spec for name, leaf, spec in planned if name not in SHIPPED]
    if user_or_hub:
        tm = _index_for([s if isinstance(s, str) else s["task"] for s in user_or_hub], opts)
        for spec in user_or_hub:
            leaf = spec if isinstance(spec, str) else spec["task"]
            try:
                loaded = tm.load([spec])["tasks"]
            except UserError:
                raise
            except Exception as exc:  # the harness raises anything from datasets/hub/yaml
                why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UserError(f"eval.lm_eval: the data of task '{leaf}' cannot be read ({type(exc).__name__}: {why}); "
                                "give a local copy with eval.lm_eval.local_data or an include_path YAML") from None
            for task in loaded.values():
                if opts["num_fewshot"] and not (task.config.fewshot_split or task.has_training_docs()
                                                or task.has_validation_docs()):
                    raise UserError(f"eval.lm_eval.num_fewshot={opts['num_fewshot']}: task '{leaf}' has no training, "
                                    "validation or fewshot_split, so its shots would come from its test rows")


def _training_lines(cfg, languages) -> set[str]:
    """Every line the run's text stages read (the sources and line limit of ``sources``)."""
    lines: set[str] = set()
    for stage in (cfg.get("experiment") or {}).get("stages") or []:
        data = stage.get("data") or {}
        if data.get("instructions"):
            continue
        for code in languages.resolve(data.get("languages", "all")):
            source, _ = training_source(code, languages, cfg)
            if source is not None:
                lines.update(read_text(source, line_limit(cfg)))
    return lines


def _leakage(task, training: set[str], pool: set[str]) -> dict:
    docs = list(task.eval_docs)
    def texts(doc):
        return {v.strip() for v in doc.values() if isinstance(v, str) and v.strip()} if isinstance(doc, dict) else set()
    return {"n_eval": len(docs), "in_training_text": sum(1 for d in docs if texts(d) & training),
            "in_flores_pool": sum(1 for d in docs if texts(d) & pool)}


def _family(leaf: str, code: str, spec, table: dict) -> str:
    """A single-language task's name without its language (xcopa_et -> xcopa, senti_sw -> senti),
    so that tasks asked for one by one still share a metric across languages."""
    meta = spec.get("metadata") if isinstance(spec, dict) else None
    suffixes = [code, table[code].flores if code in table else None,
                spec.get("dataset_name") if isinstance(spec, dict) else None,
                (meta or {}).get("hub_dataset_name") if isinstance(meta, dict) else None]
    for suffix in filter(None, suffixes):
        if leaf.endswith("_" + str(suffix)) and len(leaf) > len(str(suffix)) + 1:
            return leaf[: -len(str(suffix)) - 1]
    return leaf


def _group_means(per_language: dict, groups: dict) -> dict:
    out, stderr = {}, {}
    groups = {**groups, "overall": list(per_language)}
    for group, codes in groups.items():
        codes = [c for c in codes if c in per_language]
        if not codes:
            continue
        figures = {}
        metrics = sorted({m for c in codes for m, v in per_language[c].items()
                          if isinstance(v, float) and not m.endswith("_stderr")})
        for m in metrics:
            vals = [per_language[c][m] for c in codes if m in per_language[c]]
            figures[m] = sum(vals) / len(vals)
            ses = [per_language[c].get(m + "_stderr") for c in codes if m in per_language[c]]
            if all(isinstance(s, float) and math.isfinite(s) for s in ses):
                stderr.setdefault(group, {})[m] = math.sqrt(sum(s * s for s in ses)) / len(ses)
        figures["n_languages"] = len(codes)
        out[group] = figures
    return out, stderr


def _clean(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) else None


@register_benchmark("lm_eval")
def lm_eval_benchmark(model, tokenizer, languages, cfg) -> dict:
    opts = _options(cfg)
    _harness()
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    status, rule = language_status(cfg, languages)
    with tempfile.TemporaryDirectory(prefix="adaptlang-lm_eval-") as tmp:
        planned, dropped, skipped = _plan_specs(opts, languages, Path(tmp))
        tm = _manager_for(opts)
        with _quiet_and_seed_neutral():
            loaded = tm.load([spec for _, _, spec in planned])
            task_objects = loaded["tasks"]
            for task in task_objects.values():
                task.set_config(key="num_fewshot", value=opts["num_fewshot"])
                task.set_fewshot_seed(seed=int(cfg.seed))
            was_training = model.training
            model.eval()
            try:
                shared = opts["shared_prompt"] and all(t.get_config("output_type") == "multiple_choice"
                                                       for t in task_objects.values())
                lm = (_shared_prompt_lm() if shared else HFLM)(
                    pretrained=model, tokenizer=tokenizer, batch_size=opts["batch_size"],
                    add_bos_token=tokenizer.bos_token_id is not None)
                out = evaluate(lm, loaded, limit=opts["limit"], bootstrap_iters=1000, log_samples=False,
                               verbosity="ERROR")
            finally:
                if was_training:
                    model.train()
    training = _training_lines(cfg, languages)
    per_language, tasks, leakage = {}, {}, {}
    leaves_of = {}
    for name, leaf, _ in planned:
        leaves_of.setdefault(name, []).append(leaf)
    for asked, leaf, spec in planned:
        res = (out.get("results") or {}).get(leaf)
        code = _language_of(leaf, spec, languages.table)
        if res is None or code is None:
            skipped[f"{leaf}"] = "no result from the harness" if res is None else "no language code found in its name"
            continue
        name = asked if len(leaves_of[asked]) > 1 else _family(leaf, code, spec, languages.table)
        figures = {}
        for key, value in res.items():
            if "," not in key or _clean(value) is None:
                continue
            metric, _filter = key.split(",", 1)
            figures[f"{name}_{metric}"] = _clean(value)
        n = int(((out.get("n-samples") or {}).get(leaf) or {}).get("effective", 0))
        tasks.setdefault(name, {})[leaf] = {"language": code, **figures, "n_examples": n,
                                           **({"n_dropped_flores_pool": dropped[code]} if name == "sib200" else {})}
        row = per_language.setdefault(code, {"class": languages.class_of(code), "status": status.get(code, "unseen")})
        row.update(figures)
        row[f"{name}_n_examples"] = n
        if leaf in task_objects:
            pool = set()
            flores = languages.table[code].flores if code in languages.table else None
            if flores and (CORPORA / "flores200" / "devtest" / f"{flores}.devtest.gz").is_file():
                pool = set(flores_lines(flores, FLORES_POOL))
            leakage.setdefault(name, {})[code] = _leakage(task_objects[leaf], training, pool)
    groups = {cls: [c for c in per_language if per_language[c]["class"] == cls]
              for cls in [*languages.classes, "unlisted"]}
    groups.update({s: [c for c in per_language if per_language[c]["status"] == s] for s in STATUSES})
    classes, class_stderr = _group_means(per_language, groups)
    return {"languages": per_language, "classes": classes, "class_stderr": class_stderr, "skipped": skipped,
            "tasks": tasks, "leakage": leakage, "dropped_flores_pool": {"sib200": dropped} if dropped else {},
            "settings": {k: opts[k] for k in ("tasks", "num_fewshot", "limit", "batch_size")},
            "harness_version": _version(), "status_rule": rule}


@contextlib.contextmanager
def _quiet_and_seed_neutral():
    """The harness logs a warning per task and per truncated request; keep errors only. Its
    evaluation must not move the global random streams that training continues from."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def _shared_prompt_lm():
    """HFLM whose loglikelihood runs each context once and scores every continuation of it from
    the context's key/value cache (``_scoring.score_shared_prompt``, as the classify benchmarks
    do), instead of one full forward pass per (context, continuation). The harness's own
    tokenization (``_encode_pair``: trailing spaces go to the continuation, BOS from
    ``add_bos_token``) and left truncation are kept. ``is_greedy`` is not computed (False):
    used only for multiple-choice tasks, whose metrics read the log-likelihoods alone."""
    from lm_eval.models.huggingface import HFLM

    class SharedPromptLM(HFLM):
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            out = [(0.0, True)] * len(requests)  # an empty continuation: log 1, greedy
            groups: dict[tuple, list[int]] = {}
            for i, (_, ctx, cont) in enumerate(requests):
                if len(cont):
                    groups.setdefault(tuple(ctx), []).append(i)
            buckets: dict[int, list] = {}
            for ctx, idx in groups.items():
                conts = [list(requests[i][2])[-self.max_length:] for i in idx]
                keep = max(1, self.max_length + 1 - max(len(c) for c in conts))
                buckets.setdefault(len(idx), []).append((list(ctx)[-keep:], conts, idx))
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            for items in buckets.values():
                scores = score_shared_prompt(self.model, [p for p, _, _ in items], [c for _, c, _ in items], pad,
                                             int(self.batch_size))
                for (_, _, idx), row in zip(items, scores):
                    for i, value in zip(idx, row):
                        out[i] = (float(value), False)
            return out

    return SharedPromptLM


def _manager_for(opts: dict):
    others = [n for n in opts["tasks"] if n != "sib200"]
    if not opts["include_path"] and all(n == "xcopa" or n.startswith("xcopa_") for n in others):
        return _manager((str(_harness() / "xcopa"),), False)
    return _index_for(others, opts)


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


lm_eval_benchmark.check = check
