#!/usr/bin/env bash
# The GPU checklist (../shared/GPU.md) in one script, for a CUDA machine lent for a few minutes:
#
#   tests/gpu/on_device.sh OUT_DIR            # on the GPU machine
#   tests/gpu/on_device.sh OUT_DIR --quick    # anywhere: tiny models on the CPU, the same steps (a dry run)
#
# What it runs, in order of value (each step under a time limit, all of it under WENMO_GPU_DEADLINE_S, so a short
# lease still returns what finished): the GPU tests (tests/gpu, the real NVML probe, the RexUniNLU CUDA test, the
# launcher restarting a real CUDA process over its threshold); `bench --size full --device cuda` on the mixed
# workload (GTE first, then the cross-encoder and RexUniNLU) and at exactly 128 tokens; tuning's peak GPU memory
# (plain AdamW, ZeRO-2, ZeRO-2 + CPU optimizer offload); batching across requests on/off in process; fp16 beside the
# plan's bf16; native memory per forward (a leak, a per-shape cache or per-thread state); with gradio carried, batching through HTTP and a soak with the GPU's memory; and, last, DeepSpeed
# kernel injection, whose inference op is built with nvcc in the background from the start.
#
# Packages the machine lacks (deepspeed, pydantic, the web stack) travel as wheels in .whl/, made by
# tests/gpu/wheels.sh. Everything it writes lands in a work folder, packed after every step into
# OUT_DIR/gpu-results.tar.gz (the device tool returns at most 8 files), with OUT_DIR/steps.log beside it.
# WENMO_GPU_STEPS=name,name… runs only those steps (env always runs, the replicas when a bench step needs them), to
# split a lease into calls; WENMO_GPU_DEADLINE_S (560) bounds the whole run; WENMO_GPU_SOAK_S / WENMO_GPU_SOAK_WARMUP_S
# size the soak (its step's limit follows); WENMO_GPU_SOAK_CPU_PAIR=1 runs two CPU soaks beside it on the host's cores,
# with Python's allocator and with PYTHONMALLOC=malloc, a side-by-side of the one suspect left on the CPU.
set -u
OUT=$(realpath -m "${1:?usage: tests/gpu/on_device.sh OUT_DIR [--quick]}")
QUICK=${2:-}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
T0=$(date +%s)
DEADLINE=${WENMO_GPU_DEADLINE_S:-560}
W=${WENMO_GPU_WORK:-/tmp/wenmo-gpu}
rm -rf "$W" && mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WENMO_LOG_LEVEL=WARNING WENMO_STATE_DIR=$W/state
MODELS=${WENMO_GPU_MODELS:-/tmp/wenmo-gpu-models}  # outside $W: a second call on the warm machine reuses them

if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import deepspeed, gradio" >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

pack() { tar -czf "$OUT/gpu-results.tar.gz.part" -C "$W" --exclude=models --exclude='state*' . &&
         mv "$OUT/gpu-results.tar.gz.part" "$OUT/gpu-results.tar.gz"; cp "$W/steps.log" "$OUT/steps.log"; }
step() {  # step NAME SECONDS COMMAND…: output in NAME.log, one line in steps.log, results packed
  local name=$1 limit=$2 left started rc
  shift 2
  if [[ -n ${WENMO_GPU_STEPS:-} && ,$WENMO_GPU_STEPS, != *,$name,* ]]; then return; fi  # a lease split in calls
  left=$((DEADLINE - ($(date +%s) - T0)))
  if ((left < 10)); then echo "$name skipped: the deadline (${DEADLINE}s) is reached" | tee -a "$W/steps.log"; return; fi
  ((limit > left)) && limit=$left
  started=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$W/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(($(date +%s) - started))s (limit ${limit}s, at $(($(date +%s) - T0))s)" | tee -a "$W/steps.log"
  pack
}

if [[ $QUICK == --quick ]]; then
  DEVICE=cpu SIZE=tiny NATIVE_FORWARDS=20 CHURN_FORWARDS=30 TEXTS=24 NAIVE=4 T128=32 USERS=4 REQS=5 NLU=1 SOAK_S=30 SOAK_WARMUP=5
else
  DEVICE=cuda SIZE=full NATIVE_FORWARDS=300 CHURN_FORWARDS=3000 TEXTS=2000 NAIVE=128 T128=2048 USERS=64 REQS=20 NLU=8 SOAK_S=${WENMO_GPU_SOAK_S:-180} SOAK_WARMUP=${WENMO_GPU_SOAK_WARMUP_S:-40}  # 4096 at 128 tokens took > 120 s
fi

# The soak and the memory probes build their own demo models; only the bench steps read the full-size replicas.
if [[ -n ${WENMO_GPU_STEPS:-} ]]; then
  WENMO_GPU_STEPS=$WENMO_GPU_STEPS,env
  [[ ,$WENMO_GPU_STEPS, == *,bench-* || ,$WENMO_GPU_STEPS, == *,batching* ]] && WENMO_GPU_STEPS=$WENMO_GPU_STEPS,replicas
fi
step env 30 bash -c "date -u; nvidia-smi || true; echo TORCH_CUDA_ARCH_LIST=\${TORCH_CUDA_ARCH_LIST-unset}; $PY -c 'import sys,torch,transformers,deepspeed,pydantic; \
print(sys.version); print(\"torch\",torch.__version__,\"cuda\",torch.version.cuda,torch.cuda.is_available()); \
print(\"transformers\",transformers.__version__,\"deepspeed\",deepspeed.__version__,\"pydantic\",pydantic.__version__); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\")'; nproc; free -g"

# DeepSpeed's inference op (kernel injection; nvcc, minutes) is built in the background, in its own process group,
# and stopped (SIGSTOP) while a timed step runs: on 2026-11-27 a mixed-length bench that ran beside the build read
# wenmo-torch at half its speed in the quiet run. It runs on during the untimed steps (replicas, tests).
BUILD_PGID=
if [[ $DEVICE == cuda && ( -z ${WENMO_GPU_STEPS:-} || ,$WENMO_GPU_STEPS, == *inject* ) ]]; then
  TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8 setsid nice -n 19 "$PY" -c \
    "from deepspeed.ops.op_builder import InferenceBuilder; InferenceBuilder().load(); print('inference op built')" \
    >"$W/build-inference-op.log" 2>&1 &
  BUILD_PGID=$!
fi
build() { [[ -n $BUILD_PGID ]] && kill "-$1" -- "-$BUILD_PGID" 2>/dev/null; return 0; }  # build STOP|CONT
timed() { build STOP; step "$@"; build CONT; }  # a step whose speed is measured: the build waits

step replicas 120 "$PY" -c "import sys; from bench.suite import build_fixture, replica_root; \
r = replica_root('$MODELS', '', '$SIZE'); [print(build_fixture(f, r, '$SIZE' == 'full')) for f in ('embed', 'cross', 'nlu')]"

step tests 200 "$PY" -m pytest -q -rs tests/gpu tests/launcher/test_probes.py tests/models/test_uninlu_model.py \
  -k "gpu or nvml or cuda or launcher_nvml" --deselect tests/gpu/test_gpu.py::test_deepspeed_kernel_injection_matches_torch -s

# The demo soak on CUDA kept ~145 KiB of C heap per request (2026-11-27): a leak, a per-shape cache or per-thread
# state? Four phases of forwards tell them apart (bench/native_memory.py), with the server's engine, with torch, and
# with torch allowed cuDNN's attention (off in the server since then: it keeps a compiled graph per shape,
# pytorch/pytorch#190388; the first soak ran with it allowed).
for variant in deepspeed torch torch-cudnn; do
  step "native-memory-$variant" 90 "$PY" -m bench.native_memory --demo --device "$DEVICE" --engine "${variant%-*}" \
    --cudnn-attention "$([[ $variant == *cudnn ]] && echo on || echo off)" --forwards "$NATIVE_FORWARDS" \
    --json "$W/native-memory-$variant.json"
done

# The same shape traffic (random rows × lengths, a new shape on most forwards) padded up the length ladder and to
# the longest row, each in a fresh process: on the CPU the ladder stopped the heap's drift (2026-11-27); on CUDA,
# cuDNN and the other per-shape caches, seen by NVML.
step shape-churn 150 "$PY" -m bench.shape_churn --device "$DEVICE" --forwards "$CHURN_FORWARDS" \
  --every "$((CHURN_FORWARDS / 6))" --json "$W/shape-churn.json"

timed bench-embed 150 "$PY" -m app bench --size "$SIZE" --device "$DEVICE" --families embed --texts "$TEXTS" \
  --naive-texts "$NAIVE" --kernel-inject off --models-dir "$MODELS" --json "$W/bench-embed.json" --plot "$W/bench-embed.png"

timed bench-128 180 "$PY" -m app bench --size "$SIZE" --device "$DEVICE" --families embed --fixed-tokens 128 \
  --texts "$T128" --naive-texts "$NAIVE" --kernel-inject off --models-dir "$MODELS" --json "$W/bench-128.json"

timed bench-tune 150 "$PY" -m app bench-tune --size "$SIZE" --devices cuda --models-dir "$MODELS" --json "$W/bench-tune.json"

timed batching 90 "$PY" -m bench.batching_inprocess --model "$MODELS/$SIZE/gte" --device "$DEVICE" --users "$USERS" \
  --requests "$REQS" --json "$W/batching.json"

timed bench-cross-nlu 200 "$PY" -m app bench --size "$SIZE" --device "$DEVICE" --families cross,nlu --texts "$TEXTS" \
  --naive-texts "$NAIVE" --nlu-texts "$NLU" --kernel-inject off --models-dir "$MODELS" --json "$W/bench-cross-nlu.json"

timed bench-fp16 120 "$PY" -m app bench --size "$SIZE" --device "$DEVICE" --families embed --dtype fp16 --engine torch \
  --texts "$TEXTS" --naive-texts 32 --models-dir "$MODELS" --json "$W/bench-fp16.json"

# soak NAME DEVICE CORES [ENV=VALUE…]: one `wenmo soak` of every route in its own state directory (its own demo
# models, a free port), on the cores it is given; each judges its own server's share of the GPU
# (wenmo_gpu_process_memory_bytes), not the card's, so soaks can share a host. Its status is the soak's.
soak() {
  local name=$1 device=$2 cores=$3 rc
  shift 3
  env WENMO_DEVICE="$device" WENMO_STATE_DIR="$W/state-$name" WENMO_MAX_FILE_STORE_AGE_S=300 "$@" \
    taskset -c "$cores" "$PY" -m app soak --demo --soak-users 8 --soak-s "$SOAK_S" --soak-warmup-s "$SOAK_WARMUP" \
    --settle-every-s 20 --json "$W/$name.json" --plot "$W/$name.png" >"$W/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc"
  return $rc
}
soaks() {  # the device's soak, and with WENMO_GPU_SOAK_CPU_PAIR=1 two CPU soaks beside it, a third of the cores each
  local n third threads cores
  n=$(nproc); third=$((n / 3)); threads=$((third / 2 > 0 ? third / 2 : 1)); cores=0-$((n - 1))
  if [[ ${WENMO_GPU_SOAK_CPU_PAIR:-} == 1 && $n -ge 6 ]]; then
    soak soak-cpu cpu "$third-$((2 * third - 1))" OMP_NUM_THREADS=$threads &
    soak soak-cpu-malloc cpu "$((2 * third))-$((n - 1))" OMP_NUM_THREADS=$threads PYTHONMALLOC=malloc &
    cores=0-$((third - 1))
  fi
  # Not `soak`: the step's own output is soak.log, and a second writer of that file overwrote its first lines.
  soak soak-device "$DEVICE" "$cores"
  local rc=$?
  wait
  return $rc  # the step's status is the device soak's; soak.log has each soak's
}
export -f soak soaks
export W PY SOAK_S SOAK_WARMUP DEVICE

# The web stack (gradio, carried by tests/gpu/wheels.sh): batching through HTTP, and a soak that reads the server's
# share of the GPU through NVML (wenmo_gpu_process_memory_bytes) with the other gauges.
if "$PY" -c "import gradio" >/dev/null 2>&1; then
  timed batching-http 200 "$PY" -m app bench-batching --size "$SIZE" --device "$DEVICE" --users "$USERS" \
    --requests "$REQS" --compare-texts 8 --models-dir "$MODELS" --json "$W/batching-http.json"
  # Not timed: the soak judges memory per 1,000 requests, which a build beside it slows but does not change.
  step soak $((SOAK_S + 90)) bash -c soaks
else
  echo "web steps skipped: gradio is not installed here (tests/gpu/wheels.sh carries it)" | tee -a "$W/steps.log"
fi

if [[ $DEVICE == cuda ]]; then
  step wait-inference-op 240 bash -c "while kill -0 $BUILD_PGID 2>/dev/null; do sleep 2; done; tail -5 $W/build-inference-op.log"
  step test-inject 120 "$PY" -m pytest -q tests/gpu/test_gpu.py -k kernel_injection
  timed bench-inject 150 "$PY" -m app bench --size "$SIZE" --device "$DEVICE" --families embed,cross --engine deepspeed \
    --kernel-inject on --texts "$TEXTS" --naive-texts 32 --models-dir "$MODELS" --json "$W/bench-inject.json"
fi
pack
echo "done in $(($(date +%s) - T0))s" | tee -a "$OUT/steps.log"
