#!/usr/bin/env bash
# One GPU session's checks and figures, in priority order, each step under its own time limit:
# compiled-kernel correctness, the kernel benches (fft_conv, rational), then the model benches
# (Hyena vs attention, KAT vs ViT, LowFormer). Everything lands in $OUT (default
# bench_results/gpu/): JSON / JSON-lines and a log per step (NAME.log), the === lines in log.txt.
# A step that fails or runs out of time loses only its own remaining rows (the benches write
# after every row; the kernel benches compile rows ahead on threads, --compile-workers).
#
#   bash tools/gpu_bench.sh            # on a machine with a CUDA GPU and jax[cuda]
#   QUICK=1 bash tools/gpu_bench.sh    # smoke check of the script itself (any machine)
#   STEPS="check rational" bash ...    # a subset, in that order
#   STEPS="train tim4rec lact" bash ... # the training runs (below), then the GPU-only benches
#   BACKGROUND="diagnose check_rational" STEPS="fft_tune kat" DEADLINE=500 bash ...
#                                      # checks side by side with timed steps, all in 500 s
# The `train` step runs the CPU presets whose figures the README still lacks, side by side on the
# one GPU (each process allocates on demand): the 3-seed MovieLens table (TiM4Rec, SSD4Rec,
# SASRec; `experiments.recommendation_table`) and KAT vs ViT on Fashion-MNIST. Runs land in $RUNS
# (default /tmp/efficient_runs); their summaries, metrics and logs (no checkpoints) come back
# packed in $OUT/runs.tgz, with the bench JSON written there too.
# On a copy of the tree that is not a git checkout, or sits inside another one (a lent GPU
# machine), set EFFICIENT_GIT_COMMIT to the commit that runs: the JSON records no commit otherwise.
# Limits: the H200 session (2026-11-27) measured what the steps need. A Triton kernel or model
# train step compiles in 5-20 s on that machine's CPU (KAT/ViT train step 21 s, TiM4Rec at T = 50
# 11 s), Pallas fft_conv at N = 4K and the unrolled rational backward far longer; the earlier
# 45-75 s limits cut every step. Override one with LIMIT_<step>=SECONDS.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_results/gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX takes 60% of the card; the PyTorch baselines live in the rest.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}
PY=${PY:-python3}
# JAX's persistent compilation cache: a rerun on the same warm machine (the device keeps ignored
# paths between calls) skips the Triton and XLA compiles that cut the H200 session's steps short.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax}

# DEADLINE=SECONDS: the whole script's budget (a lent machine's 10-minute call); each step's
# limit is cut to what is left of it (less a margin for packing the results), and a step with
# under 20 s left is skipped, so the script ends, and its files come back, before the call's
# limit kills it.
DEADLINE=${DEADLINE:-}
step() { # step NAME SECONDS COMMAND...: run with a time limit (LIMIT_<NAME> overrides SECONDS),
  # log to $OUT/NAME.log (the lines of === to $LOG too), never abort the script
  local name=$1 override="LIMIT_${1//[^A-Za-z0-9_]/_}"
  local seconds=${!override:-$2}
  shift 2
  if [ -n "$DEADLINE" ]; then
    local left=$((DEADLINE - SECONDS - 15))
    if [ "$left" -lt 20 ]; then
      echo "=== $name: skipped, ${left}s left of DEADLINE=$DEADLINE" | tee -a "$LOG"
      return
    fi
    [ "$left" -lt "$seconds" ] && seconds=$left
  fi
  echo "=== $name (limit ${seconds}s, at ${SECONDS}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$seconds" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>&1 || true
  "$PY" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  echo "commit ${EFFICIENT_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
} | tee -a "$LOG"

# launch NAME SECONDS ARGS...: `python -m ARGS` in the background with a time limit, allocating GPU
# memory on demand (several share the card), logging to $RUNS/NAME.log; wait_all reports each.
pids=()
launch() {
  local name=$1 seconds=$2
  shift 2
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout --signal=INT --kill-after=10 "$seconds" \
    "$PY" -m "$@" >"$RUNS/$name.log" 2>&1 &
  pids+=($!)
}
wait_all() { # wait_all LABEL START
  for pid in "${pids[@]}"; do wait "$pid"; echo "pid $pid exit $?" | tee -a "$LOG"; done
  pids=()
  echo "=== $1: $((SECONDS - $2))s" | tee -a "$LOG"
}
RUNS=${RUNS:-/tmp/efficient_runs}

if [ -n "${QUICK:-}" ]; then
  step check 300 "$PY" -m pallas_kernels.check --quick --out "$OUT/check.json"
  step fft_conv 300 "$PY" -m pallas_kernels.fft_conv.bench --quick --section cpu \
    --sizes 256 --out "$OUT/fft_conv.json"
  step rational 300 "$PY" -m pallas_kernels.rational.bench --quick --dims 64 \
    --out "$OUT/rational.json"
  exit 0
fi

run_step() { # run_step NAME: one of the steps below
  local name=$1
  case $name in
    check_rational) # the compiled rational kernels at the KAT shapes: the GPU default tiling
      # and the prefetching (p1) and unrolled (u) loops the `rational` step times
      step check_rational 400 "$PY" -m pallas_kernels.check --ops rational --rational-variants \
        ${CHECK_RATIONAL_VARIANTS:-256x64l16-loop 256x64l16p1-loop 256x64l8u4p1-loop \
        256x64l8u8-loop} \
        --out "$OUT/check_rational.json"
      ;;
    check_fft | check_fft:*) # the bf16 variants measured fastest at 1K and 4K (README, GPU
      # 2026-11-28) in the order-2 (r128) plans, where bf16 dots were right on the H200, up to
      # 16K; then the defaults. check_fft:SPEC checks one variant in its own process
      # (BACKGROUND="check_fft:A check_fft:B" runs them side by side).
      # "+saved": with save_residuals=True (the backward reads X and z instead of recomputing).
      local variants=${CHECK_FFT_VARIANTS:-r128h1w4-bf16 r128h2m2w8-bf16 r128h2m2w8-bf16+saved}
      local label=check_fft
      if [[ $name == *:* ]]; then variants=${name#*:} label=check_fft_${name#*:}; fi
      # shellcheck disable=SC2086  # $variants: several specs
      step "$label" 400 "$PY" -m pallas_kernels.check --ops fft_conv --fft-variants $variants \
        --fft-variant-sizes ${CHECK_FFT_SIZES:-1024 4096 8192 16384} --out "$OUT/$label.json"
      ;;
    check)
      step check 240 "$PY" -m pallas_kernels.check --ops ${CHECK_OPS:-rational fft_conv} \
        --rational-variants 256x64 --fft-variants r128h1w4-bf16 r128h2m2w8-bf16 \
        --out "$OUT/check.json"
      ;;
    diagnose) # the rational backward's raw outputs per tile against float64: which tiles, rows,
      # column blocks are wrong, and whether reruns differ (the H200 check failed: README).
      # The loop variant first (the candidate GPU default), the unrolled tree (slowest to
      # compile) last, so a cut run keeps the cases that decide the default.
      step diagnose 240 "$PY" -m pallas_kernels.rational.diagnose --tilings 256x64l16-loop \
        32x64l32 256x64 --rows 25216 32768 --out "$OUT/diagnose.json"
      ;;
    diagnose_fft) # each DFT matmul of the kernels alone, then whole transforms of the plans,
      # against float64: which (arithmetic, radix, tile, axis) the 16^3 bf16 fault lives in.
      step diagnose_fft 150 "$PY" -m pallas_kernels.fft_conv.diagnose \
        --kinds ${DIAGNOSE_FFT_KINDS:-bf16 f32 bf16x3 tf32} \
        --plans 16x16x16 64x64 32x32 16x16 --out "$OUT/diagnose_fft.json"
      ;;
    fft_conv)
      step fft_conv 170 "$PY" -m pallas_kernels.fft_conv.bench --section gpu --repeats 10 \
        --sizes ${FFT_SIZES:-256 1024 4096 16384} --out "$OUT/fft_conv.json"
      ;;
    fft_tune) # fft_conv kernel options: tilings (heads, backward batch rows per program, warps),
      # order 2 with 64/128 radices (r128), heads stacked into each matmul (m), tensor-core
      # matmul arithmetic (-tf32, -bf16, ...): the H200's fastest correct variants at 1K (h8m8w8,
      # h4m4w8) and 4K (r128h1w4, r128h2m2w8; 2026-11-28), and order 2 up to 16K (at 4K and
      # beyond the h-only bf16 specs are refused: wrong on GPU, fft_conv README)
      step fft_tune 240 "$PY" -m pallas_kernels.fft_conv.bench --section gpu --repeats 10 \
        --sizes ${FFT_TUNE_SIZES:-1024 4096 16384} --gated-only --implementations \
        ${FFT_TUNE_IMPLEMENTATIONS:-jnp_fft torch_fft pallas:h8m8w8-bf16 pallas:h4m4w8-bf16 \
        pallas:r128h1w4-bf16 pallas:r128h2m2w8-bf16 pallas:r128h1w8-bf16 \
        pallas:r128h4m4w8-bf16} --out "$OUT/fft_tune.json"
      ;;
    fft_pairs) # a forward tiling and a backward tiling each the fastest of its pass at 1K on the
      # H200 (2026-11-28: h8m8w8-bf16 forward, h4m4w8-bf16 forward + backward), side by side
      # with each alone and cuFFT: `fft_conv(block_sizes=..., backward_block_sizes=...)`; then
      # the pair with save_residuals=True (+saved: two transforms in the backward, not four)
      step fft_pairs 150 "$PY" -m pallas_kernels.fft_conv.bench --section gpu --repeats 10 \
        --sizes ${FFT_PAIRS_SIZES:-1024} --gated-only --implementations \
        ${FFT_PAIRS_IMPLEMENTATIONS:-jnp_fft pallas:h8m8w8-bf16/h4m4w8-bf16 \
        pallas:h8m8w8-bf16/h4m4w8-bf16+saved pallas:h8m8w8-bf16 pallas:h4m4w8-bf16} \
        --out "$OUT/fft_pairs.json"
      ;;
    rational_tiles) # Pallas tilings on the KAT-B widths against the XLA path: the loop default,
      # prefetching (p1) and unrolled (u) loops, the forward stepping through its tile (f:
      # 123-134 registers per thread instead of 194-255, `pallas_kernels.registers`), 512-row
      # tiles, leaf rows, one-leaf tiles, the unrolled tree
      step rational_tiles 120 "$PY" -m pallas_kernels.rational.bench --section gpu --repeats 10 \
        --dims 768 3072 --dtypes bfloat16 --implementations xla pallas:256x64l16-loop \
        pallas:256x64l16p1-loop pallas:256x64l8u4p1-loop pallas:256x64l8u8-loop \
        pallas:256x64l8u4-loop pallas:256x64l8u2p1-loop pallas:256x64l8p1-loop \
        pallas:256x64l16f32p1-loop pallas:256x64l16f32-loop pallas:512x64l16w8-loop \
        pallas:256x64-loop pallas:32x64l32 pallas:128x128l8w8-loop pallas:256x64 \
        --out "$OUT/rational_tiles.json"
      ;;
    rational) # the GPU's "auto" (xla+pallas) beside each pass alone and PyTorch, and backward
      # loops with more bytes in flight (rational/README.md, More loads in flight): p1
      # prefetches the next step's loads, u4/u8 load 4/8 leaves per iteration (~8, 16, 32 KB per
      # SM by registers: 255, 239, 255 per thread, no spills)
      step rational 150 "$PY" -m pallas_kernels.rational.bench --section gpu --repeats 10 \
        --dims ${RATIONAL_DIMS:-768 3072} --implementations ${RATIONAL_IMPLEMENTATIONS:-copy gelu \
        xla pallas xla+pallas xla+pallas:256x64l16p1-loop xla+pallas:256x64l8u4p1-loop \
        xla+pallas:256x64l8u8-loop torch} \
        --out "$OUT/rational.json"
      ;;
    hyena) step hyena 120 "$PY" -m experiments.bench hyena --repeats 10 --out "$OUT/hyena.jsonl" ;;
    kat)
      step kat 120 "$PY" -m experiments.bench kat --batch 128 --repeats 10 --out "$OUT/kat.jsonl"
      ;;
    train)
      mkdir -p "$RUNS"
      limit=${TRAIN_SECONDS:-210}
      echo "=== train (limit ${limit}s per process)" | tee -a "$LOG"
      start=$SECONDS
      for preset in tim4rec/ml100k ssd4rec/ml100k sasrec/ml100k; do
        launch "${preset%%/*}" "$limit" experiments.recommendation_table "$preset" --seeds 3 \
          --runs-dir "$RUNS/seeds" --train.progress False
      done
      for preset in kat/fashion_mnist vit/fashion_mnist; do
        launch "${preset%%/*}_fashion_mnist" "$limit" experiments.run "$preset" \
          --workdir "$RUNS/${preset%%/*}_fashion_mnist" --train.progress False
      done
      wait_all train "$start"
      # Every run finished: this only reads them back and writes the table.
      timeout 60 "$PY" -m experiments.recommendation_table --seeds 3 --runs-dir "$RUNS/seeds" \
        2>&1 | tee -a "$LOG"
      tail -n 5 "$RUNS"/*.log >>"$LOG" 2>&1
      ;;
    video_qa) # issue 8: the six video-QA presets (slow-fast vs fast-only x 16/64/128 frames),
      # 5x-longer runs of the 128-frame pair (and hybrid layers {1, 3}), and KAT on
      # Fashion-MNIST, side by side on the one GPU
      mkdir -p "$RUNS"
      limit=${TRAIN_SECONDS:-300}
      echo "=== video_qa (limit ${limit}s per process)" | tee -a "$LOG"
      start=$SECONDS
      while read -r name preset args; do
        shared=() # the video models share one encoder pretraining (the first run trains it)
        [[ $preset == kat/* ]] || shared=(--vision_pretrain_dir "$RUNS/vision_pretrain")
        # shellcheck disable=SC2086  # $args: several overrides
        launch "$name" "$limit" experiments.run "$preset" --workdir "$RUNS/$name" \
          --train.progress False "${shared[@]}" $args
      done <<'RUNS'
slowfast_f128 slowfast/video_qa
slowfast_f64 slowfast/video_qa_f64
slowfast_f16 slowfast/video_qa_f16
fastonly_f128 fastonly/video_qa_f128
fastonly_f64 fastonly/video_qa_f64
fastonly_f16 fastonly/video_qa_f16
allfast_f128 allfast/video_qa_f128
slowfast_f128_3000 slowfast/video_qa --train.steps 3000 --train.eval_every 500
fastonly_f128_3000 fastonly/video_qa_f128 --train.steps 3000 --train.eval_every 500
kat_fashion_mnist kat/fashion_mnist
RUNS
      wait_all video_qa "$start"
      grep -H -E "^accuracy|final_eval|wall time|vision encoder|Error" "$RUNS"/*.log | tee -a "$LOG"
      ;;
    tim4rec) # train steps at the paper's batch, 102,400 positions (B = 2048 .. 25); SASRec at
      # T = 4000 (XLA: 144 GiB) is compiled only
      step tim4rec 300 "$PY" -m experiments.bench tim4rec --repeats 10 \
        ${TIM4REC_MODELS:+--models "$TIM4REC_MODELS"} --out "$OUT/tim4rec.jsonl"
      ;;
    lact)
      step lact 180 "$PY" -m experiments.bench lact --repeats 5 \
        --models util_c64,util_c256,util_c1024,util_c2048,util_c4096,lm_4k_lact,lm_4k_transformer \
        --out "$RUNS/bench/lact.jsonl"
      ;;
    lowformer)
      step lowformer 90 "$PY" -m experiments.bench lowformer --repeats 10 \
        --out "$OUT/lowformer.jsonl"
      ;;
    *) echo "unknown step $name" | tee -a "$LOG" ;;
  esac
}

# BACKGROUND: steps that only check results (nothing timed), each in its own process side by
# side with STEPS from the start, allocating GPU memory on demand. A lent machine's 16 cores
# compile their kernels while STEPS time theirs; their few kernel calls share the card with
# the timed rows (each timed row is a median of 10 samples).
bg=()
for name in ${BACKGROUND:-}; do
  (export XLA_PYTHON_CLIENT_PREALLOCATE=false; run_step "$name") &
  bg+=($!)
done
# STEPS picks and orders the steps (default: all, in this order; more than one 10-minute call).
for name in ${STEPS:-diagnose check kat fft_tune fft_conv rational_tiles rational hyena lowformer}; do
  run_step "$name"
done
for pid in "${bg[@]}"; do wait "$pid"; done
if [ -d "$RUNS" ]; then
  tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude=best --exclude=plots --exclude=tb -C "$RUNS" . || true
fi
grep -h -E "^(ok|FAIL)|jnp.fft / impl|/ (gelu|xla)|===|^[0-9]+/[0-9]+ |wrong" "$OUT"/*.log | tail -80
