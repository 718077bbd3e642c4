#!/usr/bin/env bash
# The tiny-scale tables of docs/reproduce.md ("Measured at the tiny scale"): Instruct-Align
# Table 4 (zero-shot, mlm, (IA)1 r = 0 / 1000 / 10000) and the active-forgetting grid
# (Baseline / BA / AFA), seeds 0 1 2, on one CPU core.
#
#   bash bench/tiny_tables.sh OUT_DIR [ia|ia5|ia_sequence_mean|af|af_lm_eval|all]    # e.g. /tmp/tiny-tables all
#
# IA: the rows of one seed share their first two stages (pretrain, English tuning), so they
# are trained once, as the zero-shot row (experiment=ia_zeroshot); each other row is the
# (IA)1 stage alone (experiment=ia_instruct) from that row's tune model. Evaluation: NusaX and
# NusaWrites after the last stage only, the first $ROWS test rows per language, 6 prompts.
# ia5: Instruct-Align Table 5's other rows (objective ablations, r = 0), from the tune models
# that `ia` left in OUT_DIR/ia (run `ia` first for the same seeds).
# ia_sequence_mean: the runs `ia` (and `ia5`) left in OUT_DIR/ia, each last stage's model
# evaluated again with the authors' scoring (eval.classify.scoring=sequence_mean, as
# grid=ia_paper sets) by `adaptlang eval --run` into OUT_DIR/ia-sequence-mean.
# AF: grid=af_paper, perplexity and isotropy (Tables 1-2) after the last stage only.
# af_lm_eval: the AF paper's downstream tasks (Tables 7-11) on the instruct models that `af`
# left in OUT_DIR/af, each evaluated by `adaptlang eval --run` into OUT_DIR/af-lm-eval:
# af_xcopa (vendored) and, with XQUAD=folder written by `python -m
# adaptlang.benchmarks.squad_local xquad.*.json --out folder`, af_xquad; $LIMIT rows per language.
# docs/reproduce.md says which seeds of each were run, in which order and at which commit.
set -uo pipefail
OUT=${1:?usage: bash bench/tiny_tables.sh OUT_DIR [ia|ia5|ia_sequence_mean|af|af_lm_eval|all]}
WHAT=${2:-all}
PY=${PYTHON:-python}
SEEDS=${SEEDS:-0 1 2}
ROWS=${ROWS:-40}
LIMIT=${LIMIT:-100}
XQUAD=${XQUAD:-}
AF_EVAL=${AF_EVAL:-perplexity,isotropy}   # add flores_4shot for Table 3 (greedy generation: slower)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one core
run() { "$PY" -m adaptlang.cli run "$@"; }
IA_EVAL=(languages=nusax "eval.benchmarks=[nusax,nusawrites]" eval.stages=last
         "eval.classify.max_examples=$ROWS" "output_dir=$OUT/ia")
compare_seeds() {  # FOLDER BASELINE_RUN OUT_NAME: every run in $OUT/FOLDER against BASELINE_RUN's method
  "$PY" -m adaptlang.cli compare "$OUT/$1"/*-s* --baseline "$OUT/$1/$2" --out "$OUT/$3"
}
eval_again() {  # RUN_DIR INTO [key=value ...]: the run's last stage model, evaluated with the run's
                # config and the overrides, as a run folder $OUT/INTO/<run name>
  local run_dir=$1 into=$2 last
  shift 2
  last=$("$PY" -c 'import json, sys; print(list(json.load(open(sys.argv[1]))["stages"])[-1])' "$run_dir/metrics.json")
  "$PY" -m adaptlang.cli eval "$run_dir/stages/$last/model" --config "$run_dir/config.yaml" "$@" \
    --run "$OUT/$into/$(basename "$run_dir")"
}
ia_row() {  # the (IA)1 stage alone from seed $1's zero-shot tune model; the rest: the row's options
  local s=$1; shift
  run experiment=ia_instruct model=pretrained "model.name_or_path=$OUT/ia/zero-shot-s$s/stages/tune/model" \
    eval.base=false "${IA_EVAL[@]}" seed="$s" "$@"
}

if [[ $WHAT == ia || $WHAT == all ]]; then
  for s in $SEEDS; do
    run experiment=ia_zeroshot strategy=none "${IA_EVAL[@]}" seed="$s" name="zero-shot-s$s"
    ia_row "$s" strategy=mlm name="mlm-s$s"
    for r in 0 1000 10000; do
      ia_row "$s" strategy=xling+replay "strategy.xling.known=[en,id]" strategy.replay.size=$r name="ia-r$r-s$s"
    done
  done
  compare_seeds ia zero-shot-s0 compare-ia
fi

if [[ $WHAT == ia5 || $WHAT == all ]]; then   # grid=ia_paper's Table 5 rows
  XLING=(strategy=xling+replay "strategy.xling.known=[en,id]" strategy.replay.size=0)
  for s in $SEEDS; do
    ia_row "$s" "${XLING[@]}" "strategy.xling.objectives=[word,span]" name="ia-denoising-s$s"
    ia_row "$s" "${XLING[@]}" "strategy.xling.objectives=[sentence]" name="ia-translation-s$s"
    ia_row "$s" "${XLING[@]}" "strategy.xling.objectives=[word,span,sentence,monolingual]" name="ia+monolingual-s$s"
  done
  compare_seeds ia zero-shot-s0 compare-ia
fi

if [[ $WHAT == ia_sequence_mean || $WHAT == all ]]; then
  for s in $SEEDS; do
    for run_dir in "$OUT"/ia/*-s"$s"; do
      eval_again "$run_dir" ia-sequence-mean eval.classify.scoring=sequence_mean
    done
  done
  compare_seeds ia-sequence-mean zero-shot-s0 compare-ia-sequence-mean
fi

if [[ $WHAT == af || $WHAT == all ]]; then
  for s in $SEEDS; do   # seed by seed, so that an interrupted batch leaves whole seeds
    run grid=af_paper seed="$s" "eval.benchmarks=[$AF_EVAL]" eval.stages=last \
      "output_dir=$OUT/af"
  done
  compare_seeds af Baseline-s0 compare-af
fi

if [[ $WHAT == af_lm_eval || $WHAT == all ]]; then
  TASKS=af_xcopa; LOCAL=()
  if [[ -n $XQUAD ]]; then TASKS=af_xcopa,af_xquad; LOCAL=("eval.lm_eval.local_data.af_xquad=$XQUAD"); fi
  for s in $SEEDS; do
    for run_dir in "$OUT"/af/*-s"$s"; do   # the last stage: instruct
      eval_again "$run_dir" af-lm-eval "eval.benchmarks=[lm_eval]" "eval.lm_eval.tasks=[$TASKS]" \
        "eval.lm_eval.limit=$LIMIT" "${LOCAL[@]}"
    done
  done
  compare_seeds af-lm-eval Baseline-s0 compare-af-lm-eval
fi
