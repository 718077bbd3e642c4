"""Vocabulary expansion (``vocab``): the active-forgetting paper's adaptation step.

Active-forgetting paper, section 3 (and Figure 1): "first a new vocabulary V' is learned
over [the new languages' text] and merged with V ... In the second stage, the language
modeling head of M is replaced to be of the appropriate size i.e. |V ∪ V'|. Then the new
language modeling head and token embeddings of newly added tokens (i.e. V' \\ V) are
learned with standard language modeling training ... the entire Transformer stack of M and
token embeddings of V are held frozen". Appendix A: 32000 base pieces + 16000 merged.

At the start of the stage it acts in (``stages: [adapt]``) this strategy

1. learns a BPE model of the base tokenizer's kind (``vocab_size`` pieces) on the text of
   ``languages`` (default: the adapting class, the stage's own training text): sentencepiece
   for a sentencepiece-style base, the ``tokenizers`` trainer for a byte-level one; a text
   that cannot hold ``vocab_size`` pieces is refused (by the plan when it is far too small);
2. merges it into the base tokenizer (``merge.py`` here): old ids and merges unchanged,
   new ids after them, and every vendored text of the ``protect`` languages (default: the
   pretraining class) tokenizes exactly as before;
3. resizes the input embeddings and the LM head and initializes the new rows (``init``):
   ``random`` (the model's own initializer), ``mean`` (mean of the old rows),
   ``subword-mean`` (mean of the rows of the old-tokenizer pieces of the new token) or
   ``focus`` (FOCUS, Dobler & de Melo 2023: a sparsemax-weighted combination of the overlapping
   tokens' rows, weights from static embeddings of the new text; ``focus.py`` here);
4. makes trainable: the new embedding rows (peft TrainableTokens: the old rows stay in the
   frozen base tensor, so no gradient, AdamW moment or weight decay can touch them), the LM
   head (``head: all``, the paper's "new language modeling head"; ``head: new`` trains only its
   new rows, also through TrainableTokens), and, if ``body: lora``, LoRA adapters on every
   linear layer of the body (peft), or, if ``body: full``, every body weight (not the old
   embedding/head rows) at ``train.lr``. Otherwise the body is frozen (``body: frozen``, the paper).

At the end of the stage the peft layers are merged and removed, so the saved model is a
plain transformers model. Notes (metrics.json ``strategy_notes.vocab``): tokens added, merge
statistics, and token fertility (tokens per word and per character) per language on its
held-out text, before and after the merge.

Deviations and choices the paper leaves open (also in README):
* the paper does not say how the vocabularies are merged, nor how new rows are initialized;
  our merge keeps old-language tokenization bit-exact, which drops the new pieces that would
  fire on old-language text (counted in ``dropped_for_old_languages``); the default
  initialization is ``subword-mean``;
* with tied input/output embeddings the LM head *is* the embedding matrix: only its new rows
  train (old rows stay frozen), whatever ``head`` says;
* the paper's head is "replaced"; we keep the old head rows as the starting point of the new
  head (``head: all`` then trains all of it);
* ``body: lora`` and ``body: full`` are beyond the paper, which freezes the body. On a trained
  checkpoint with a short budget the frozen body cannot use the new rows well enough to
  improve the new languages (docs/real-checkpoints.md has the SmolLM2 figures), so
  ``experiment=pretrained`` trains the body as well.
"""
from __future__ import annotations

import logging
import time
import warnings


from ...sources import flores_lines, heldout_texts, line_limit, read_text, training_source
from ...config_rules import RULES, checked
from ...errors import UserError, listing, suggest
from ...languages import CORPORA
from ...models import module_name
from ...strategy import StageContext, Strategy, register_strategy
from . import focus
from . import merge as vm
from .report import vocab_report_section

log = logging.getLogger("adaptlang")
INITS = ("random", "mean", "subword-mean", "focus")
HEADS = ("all", "new")
BODIES = ("frozen", "lora", "full")
TOKENS_ADAPTER, LORA_ADAPTER = "vocab_tokens", "vocab_lora"
FERTILITY_SENTENCES = 200
RATIO_KEY = "strategy.vocab.embedding_lr_ratio"


def _choice(key: str, value, valid) -> str:
    value = str(value)
    if value not in valid:
        raise UserError(f"strategy.vocab.{key}='{value}'.{suggest(value, valid)} Valid: {listing(valid)}")
    return value


def protected_texts(codes, languages, cfg) -> list[str]:
    """Every vendored text of the given languages: training text (all of NTREX, or the user's
    file up to data.max_lines_per_language), all FLORES-200 devtest lines, UDHR."""
    texts: list[str] = []
    for code in codes:
        lang = languages.check(code)
        source, why = training_source(code, languages, cfg)
        if source is not None:
            limit = None if why == "NTREX-128" else line_limit(cfg)
            texts += read_text(source, limit)
        if lang.flores:
            texts += flores_lines(lang.flores, range(0, 1012))
        if lang.udhr and (CORPORA / "udhr" / f"{lang.udhr}.txt.gz").is_file():
            texts += read_text(str(CORPORA / "udhr" / f"{lang.udhr}.txt.gz"))
    return texts


def check_special_tokens_kept(old, new) -> None:
    """eos / bos / pad / unk and every added token (chat tokens) keep their ids through the merge."""
    for name in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(old, name) != getattr(new, name):
            raise RuntimeError(f"vocab merge moved {name}: {getattr(old, name)} -> {getattr(new, name)}")
    moved = {t: (i, new.convert_tokens_to_ids(t)) for t, i in old.added_tokens_encoder.items()
             if new.convert_tokens_to_ids(t) != i}
    if moved:
        raise RuntimeError(f"vocab merge renumbered added tokens: {moved}")


def unseen_text_changes(old, new, protect: list[str], ctx: StageContext) -> dict:
    """The merge keeps the protected *vendored* text exact; English text it never saw (the past
    instruction data replay uses: GSM8K, self-instruct) may still tokenize differently. Share of
    those strings whose tokens change, reported per language (English, when protected)."""
    if "en" not in protect:
        return {}
    from ... import instructions

    past = instructions.build("english", ["en"], ctx.config, ctx.seed_for("vocab.unseen"))
    texts = [t for e in past for t in (e["prompt"], e["target"])]
    changed = len(vm.changed_texts(old, new, texts))
    return {"en": {"source": "English instruction data (GSM8K, self-instruct)", "strings": len(texts),
                   "changed": changed, "rate": round(changed / max(1, len(texts)), 4)}}


def learning_texts(codes, languages, cfg) -> list[str]:
    """The training text of ``codes``, as the stage reads it: the new vocabulary is learned on it."""
    out = []
    for code in codes:
        source, _ = training_source(code, languages, cfg)
        if source is not None:
            out += read_text(source, line_limit(cfg))
    if not out:
        raise UserError(f"strategy.vocab.languages: no training text for any of {listing(codes)}")
    return out


def too_small(asked: int, supported: str, codes, lines: int) -> str:
    return (f"strategy.vocab.vocab_size={asked}: the new languages' text ({lines} lines of {listing(codes)}) "
            f"supports {supported} pieces; lower strategy.vocab.vocab_size or give more text "
            "(data.max_lines_per_language, or the languages' own text files)")


@register_strategy("vocab")
class VocabularyExpansion(Strategy):
    """Learn a new-language vocabulary, merge it, train only the new rows and the LM head."""

    owns = frozenset({"embeddings.rows", "tokenizer"})
    changes = frozenset({"vocabulary"})
    # set up after the strategies that remember the model, so that its rows are merged before
    # they take their copy at the stage end
    phase = "vocabulary"

    def __init__(self, vocab_size: int, languages, protect: str, init: str, head: str, body: str, lora_r: int,
                 lora_alpha: int, character_coverage: float, fertility: str, embedding_lr_ratio):
        if int(vocab_size) < 1:
            raise UserError(f"strategy.vocab.vocab_size={vocab_size}: must be a positive number of pieces")
        self.vocab_size = int(vocab_size)
        self.languages = languages
        self.protect = str(protect)
        self.init = _choice("init", init, INITS)
        self.head = _choice("head", head, HEADS)
        self.body = _choice("body", body, BODIES)
        self.lora_r, self.lora_alpha = int(lora_r), int(lora_alpha)
        self.character_coverage = float(character_coverage)
        self.fertility_languages = str(fertility)
        # the config's rule, applied here too: compose() and build_strategy() from Python build a
        # strategy without a config, so check_values (load_config, make_plan) may never see the value
        ratio = checked(RATIO_KEY, embedding_lr_ratio, RULES[RATIO_KEY])
        self.embedding_lr_ratio = None if ratio is None else float(ratio)
        self.tuners: list = []  # peft tuners injected in place, merged at stage end
        self.added_tokens = 0
        self.new_ids: list[int] = []
        self.focus_notes: dict = {}

    def train_options(self) -> dict:
        return {} if self.embedding_lr_ratio is None else {"embedding_lr_ratio": self.embedding_lr_ratio}

    def claims(self) -> frozenset[str]:
        # with body: full, a lora strategy in the same stage freezes the weights it wraps (lora's rule)
        return self.owns | ({"body.adapters"} if self.body == "lora" else set())

    @classmethod
    def check_plan(cls, plan, me) -> None:
        if plan.base_tokenizer is not None:  # a tokenizer kind we cannot extend: refused before training
            vm.base_bpe(plan.base_tokenizer)
        for key in ("languages", "protect", "fertility"):
            spec = me.options.get(key)
            if spec is not None:
                cls._codes(spec, plan.languages, key)
        codes = cls._codes(me.options.get("languages", "adapting"), plan.languages, "languages")
        texts = learning_texts(codes, plan.languages, plan.config)
        asked, bound = int(me.options.get("vocab_size", 0)), vm.learnable_pieces_bound(texts)
        if asked > bound:
            raise UserError(too_small(asked, f"at most {bound}", codes, len(texts)))

    report_section = classmethod(lambda cls, stage, notes: vocab_report_section(stage, notes))

    # --- helpers ---------------------------------------------------------------------
    @staticmethod
    def _codes(spec, languages, key: str) -> list[str]:
        if isinstance(spec, str):
            if spec.strip().lower() == "none":
                return []
            spec = [s.strip() for s in spec.replace("+", ",").split(",") if s.strip()]
        try:
            return languages.resolve(list(spec))
        except UserError as exc:
            raise UserError(f"strategy.vocab.{key}: {exc}") from None

    def _fertility(self, before, after, ctx: StageContext) -> dict:
        table = {}
        for code in self._codes(self.fertility_languages, ctx.languages, "fertility"):
            texts, _ = heldout_texts(code, ctx.languages, ctx.config, FERTILITY_SENTENCES)
            if texts:
                table[code] = {"class": ctx.languages.class_of(code),
                               "before": vm.fertility(before, texts), "after": vm.fertility(after, texts)}
        return table

    # --- hooks -----------------------------------------------------------------------
    def setup_model(self, model, tokenizer, ctx: StageContext):
        started = time.perf_counter()
        learn = self._codes(self.languages, ctx.languages, "languages")
        protect = self._codes(self.protect, ctx.languages, "protect")
        vm.base_bpe(tokenizer)  # refuse unsupported tokenizers before any work
        texts = learning_texts(learn, ctx.languages, ctx.config)
        new = vm.train_new_vocabulary(texts, self.vocab_size, self.character_coverage, like=tokenizer)
        if len(new["vocab"]) < self.vocab_size:
            raise UserError(too_small(self.vocab_size, f"only {len(new['vocab'])}", learn, len(texts)))
        emb = model.get_input_embeddings()
        old_rows = emb.weight.shape[0]
        start = max(len(tokenizer), old_rows)
        data, stats = vm.merge_vocabularies(tokenizer, new, protected_texts(protect, ctx.languages, ctx.config), start)
        merged = vm.to_transformers(tokenizer, data)
        check_special_tokens_kept(tokenizer, merged)
        n_new = stats["added_tokens"]
        self.new_ids = list(range(start, start + n_new))
        self.added_tokens = n_new
        merge_seconds = time.perf_counter() - started
        if n_new == 0:
            raise UserError("strategy.vocab: the merge added no tokens (every new piece would change the "
                            "protected languages' tokenization); check strategy.vocab.languages/protect")
        pieces = [p for p, _ in sorted(((p, i) for p, i in data["model"]["vocab"].items() if i >= start),
                                       key=lambda kv: kv[1])]
        focus_plan = self._focus_weights(tokenizer, merged, new, texts, ctx) if self.init == "focus" else None
        self._resize_and_init(model, tokenizer, pieces, start, ctx, focus_plan)
        tied = self._make_trainable(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        ctx.notes["vocab"] = {
            "added_tokens": n_new, "vocab_size_before": len(tokenizer), "vocab_size_after": len(merged),
            **{k: v for k, v in stats.items() if k != "added_tokens"},
            "init": self.init, **({"focus": self.focus_notes} if self.init == "focus" else {}),
            "head": "tied (new rows only)" if tied else self.head, "body": self.body,
            "trainable_parameters": trainable, "learned_from": learn, "protected": protect, "merge_seconds": round(merge_seconds, 3),
            "fertility": self._fertility(tokenizer, merged, ctx),
            "unseen_text_changed": unseen_text_changes(tokenizer, merged, protect, ctx),
        }
        log.info("vocab: %d tokens added (%d dropped to keep old languages exact) in %.1fs", n_new,
                 stats["dropped_for_old_languages"], merge_seconds)
        return model, merged

    def _focus_weights(self, old, merged, new: dict, texts, ctx: StageContext) -> tuple:
        """FOCUS (``focus.py`` here): static vectors from the new languages' text in the merged
        tokenization; the overlap is the new model's pieces the old vocabulary already had."""
        vectors = focus.static_embeddings(focus.token_sequences(merged, texts), ctx.seed_for("vocab.focus"))
        vocab, special = old.get_vocab(), set(old.all_special_ids)
        overlap = sorted({vocab[p] for p in new["vocab"] if p in vocab and vocab[p] not in special})
        covered, weights, used = focus.focus_weights(self.new_ids, overlap, vectors)
        if len(covered) < len(self.new_ids) / 2:
            raise UserError(f"strategy.vocab.init=focus: only {len(covered)} of the {len(self.new_ids)} new tokens occur "
                            f"{focus.MIN_COUNT}+ times in the new languages' text ({len(texts)} lines), too few for "
                            "static embeddings; give more text or use init=subword-mean")
        self.focus_notes = {"covered": len(covered), "random": len(self.new_ids) - len(covered), "overlap": len(used),
                            "mean_nonzero_weights": round(float((weights > 0).sum(-1).float().mean()), 2)}
        return covered, weights, used

    def _resize_and_init(self, model, tokenizer, pieces, start: int, ctx: StageContext, focus_plan=None) -> None:
        """Grow the embeddings (and an untied head) and fill their new rows by ``init``; each
        matrix draws from its own seed (``vocab.init``, ``vocab.init.head``)."""
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        old_rows = {"vocab.init": emb.weight.shape[0]}
        if head is not None and head.weight is not emb.weight:
            old_rows["vocab.init.head"] = head.weight.shape[0]
        vm.grow_embeddings(model, start + len(pieces))
        weights = {"vocab.init": model.get_input_embeddings().weight,
                   "vocab.init.head": getattr(model.get_output_embeddings(), "weight", None)}
        subword = vm.old_piece_ids(tokenizer, pieces) if self.init == "subword-mean" else []
        for purpose, n_old in old_rows.items():
            weight, seed = weights[purpose], ctx.seed_for(purpose)
            if focus_plan is not None:  # the head's new rows: the same combination of its overlap rows
                focus.init_rows(weight, self.new_ids, n_old, *focus_plan, seed=seed)
            else:
                fresh = vm.random_rows(model, len(pieces), weight.shape[1], seed) if self.init == "random" else None
                vm.init_rows(weight, self.new_ids, n_old, self.init, subword, fresh)

    def _make_trainable(self, model) -> bool:
        from peft import LoraConfig, LoraModel, TrainableTokensConfig, TrainableTokensModel

        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        tied = head is not None and head.weight is emb.weight
        embedding_ids = {id(emb.weight)} | ({id(head.weight)} if head is not None else set())
        targets = [module_name(model, emb)]
        if head is not None and not tied and self.head == "new":
            targets.append(module_name(model, head))
        config = TrainableTokensConfig(target_modules=targets, token_indices=list(self.new_ids))
        with warnings.catch_warnings():
            # TrainableTokensModel ties the head's adapter to the embedding's itself (peft's generic
            # tied-weights warning does not apply; tests/test_vocab.py checks the tied case), and
            # the LoRA tuner is meant to join the token adapter in the same model.
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*")
            warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
            self.tuners = [TrainableTokensModel(model, config, TOKENS_ADAPTER)]
            if self.body == "lora":
                lora = LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=0.0,
                                  target_modules="all-linear")
                self.tuners.append(LoraModel(model, lora, LORA_ADAPTER))
        for name, p in model.named_parameters():
            p.requires_grad = ("trainable_tokens_delta" in name or "lora_" in name
                               or (self.body == "full" and id(p) not in embedding_ids))
        if head is not None and not tied and self.head == "all":
            model.get_output_embeddings().weight.requires_grad = True
        log.info("vocab: trainable: %d new embedding rows, LM head %s, body %s", len(self.new_ids),
                 "tied (new rows)" if tied else self.head, self.body)
        return tied

    def on_stage_end(self, ctx: StageContext) -> None:
        for tuner in reversed(self.tuners):  # LoRA (injected last) first, then the token rows
            tuner.merge_and_unload()
        self.tuners = []

    def state_dict(self) -> dict:
        return {"added_tokens": self.added_tokens, "new_ids": self.new_ids}

    def load_state_dict(self, state: dict) -> None:
        self.added_tokens = int(state["added_tokens"])
        self.new_ids = list(state["new_ids"])
