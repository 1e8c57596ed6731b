#!/usr/bin/env bash
# On the lent H200 (no network): install tune-doctor and the peers beside the image's torch without touching it,
# then run the kernels' GPU work, writing everything under $OUT.
#
#   bash benchmarks/gpu_kernels_run.sh [STAGE...]     STAGE: check | tests | probe | bench | train | packing | all (default: all)
#     check  install, then import every peer (liger ops, Cut Cross-Entropy, unsloth) and list the kernel probes
#     tests  pytest -m gpu on the kernel tests and the kernel probes' tests
#     probe  doctor probe --only kernels dispatch (cold: every probe runs; then the cached table, verbose)
#     bench  benchmarks/kernels.py at the ANCHORS.md shapes (Unsloth in its own process)
#     train  benchmarks/train.py: the ANCHORS.md LoRA run, hf / liger / unsloth / doctor each in its own process,
#            the doctor's step profiled (not part of `all`: it takes ~5 of a call's 10 minutes by itself;
#            TRAIN_ARGS adds options, e.g. TRAIN_ARGS="--variants hf doctor --profile doctor unsloth")
#     packing  benchmarks/packing.py: `doctor train` one epoch of short examples, packed vs unpacked (train's model)
#
# Wheels come from carried, git-ignored folders: .devwheels (platformdirs, filelock, packaging, pytest, pluggy,
# iniconfig, pygments: the doctor's and the tests' pure-Python needs) and .peerwheels (made here by
# ../shared/anchors/peer_wheels.sh .peerwheels: liger-kernel, bitsandbytes, unsloth + unsloth_zoo and their
# dependencies, cut_cross_entropy; xformers is left out: its 0.0.35 build is for another torch).
# At most 8 files come back from $OUT: env.txt, timings.txt and one or two files per stage.
set -u -o pipefail
export PYTHONUNBUFFERED=1 NO_COLOR=1 COLUMNS=160 DOCTOR_CACHE_DIR=/tmp/doctor-cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
REPO=$(pwd)
STAGES=${*:-all}
[ "$STAGES" = all ] && STAGES="tests probe bench"
t() { local s=$(date +%s.%N); "$@"; local rc=$?; local e=$(date +%s.%N)
      awk -v a="$s" -v b="$e" -v rc=$rc -v c="$*" 'BEGIN{printf "%.1f s rc=%s: %s\n", b-a, rc, c}' >> "$OUT/timings.txt"; return $rc; }

install() {
  # the project: non-editable into /tmp/site (its deps from .devwheels); if it cannot be built here, run from the checkout
  if [ ! -f /tmp/site/.k-installed ]; then
    rm -rf /tmp/site && mkdir -p /tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devwheels/*.whl || return 1
    if python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$REPO" >> "$OUT/env.txt" 2>&1; then
      echo "tune-doctor installed into /tmp/site" >> "$OUT/env.txt"
    else
      echo "tune-doctor could not be built here: running it from the checkout" >> "$OUT/env.txt"
    fi
    touch /tmp/site/.k-installed
  fi
  if [ ! -f /tmp/peers/.k-installed ]; then
    rm -rf /tmp/peers && mkdir -p /tmp/peers
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peers \
      .peerwheels/liger/*.whl .peerwheels/us/*.whl .peerwheels/bnb/*.whl || return 1
    touch /tmp/peers/.k-installed
  fi
  # the checkout after the installed copy: tests import `tests.*` from it, and doctor from it when the build failed
  export PYTHONPATH=/tmp/site:/tmp/peers:$REPO
  {
    python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
    python3 -c "import doctor, os; print('doctor from', os.path.dirname(doctor.__file__))"
    python3 -m pip list 2>/dev/null | grep -iE "^(torch|triton|transformers|peft|accelerate|liger.kernel|unsloth|unsloth.zoo|cut.cross.entropy|bitsandbytes|xformers) "
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  } >> "$OUT/env.txt" 2>&1
}

check() {
  {
    t python3 -c "import liger_kernel.ops.rms_norm, liger_kernel.ops.rope, liger_kernel.ops.swiglu, liger_kernel.ops.geglu, liger_kernel.ops.fused_linear_cross_entropy; print('liger ops ok')"
    t python3 -c "import cut_cross_entropy; from cut_cross_entropy import linear_cross_entropy; print('cut_cross_entropy ok')"
    t timeout 120 python3 -c "import unsloth; from unsloth.kernels.rms_layernorm import Fast_RMS_Layernorm; from unsloth.kernels.rope_embedding import fast_rope_embedding; print('unsloth kernels ok')"
    python3 -m doctor probe --list | grep -E "kernels\.|dispatch\."
  } > "$OUT/check.txt" 2>&1
  tail -n 3 "$OUT/check.txt"
}

tests() {
  (cd "$REPO" && t python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels tests/probes/test_kernel_probes.py 2>&1 \
     | tail -n 60) > "$OUT/pytest_gpu.txt"
  tail -n 3 "$OUT/pytest_gpu.txt"
}

probe() {
  (cd /tmp && t python3 -m doctor probe --only kernels dispatch --refresh --jobs 1 --json > "$OUT/probe.json" 2> "$OUT/probe.txt")
  (cd /tmp && python3 -m doctor probe --only kernels dispatch -v >> "$OUT/probe.txt" 2>&1)  # cached verdicts + dispatch table
  tail -n 25 "$OUT/probe.txt"
}

bench() {
  (cd "$REPO" && t python3 benchmarks/kernels.py --out "$OUT" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1)
  cat "$OUT/kernels.md" 2>/dev/null || tail -n 30 "$OUT/bench.log"
}

train() {
  # each variant gets TRAIN_TIMEOUT s (Unsloth's cold import alone is ~41 s); train.json, train.md, train.log,
  # profile_doctor.txt land in $OUT, the run's own lines in train_stdout.txt
  (cd "$REPO" && t python3 benchmarks/train.py --out "$OUT" --timeout "${TRAIN_TIMEOUT:-200}" --profile doctor \
     ${TRAIN_ARGS:-} > "$OUT/train_stdout.txt" 2>&1)
  cat "$OUT/train.md" 2>/dev/null || tail -n 30 "$OUT/train_stdout.txt"
}

packing() {
  (cd "$REPO" && t python3 benchmarks/packing.py --out "$OUT" --timeout "${PACKING_TIMEOUT:-240}" ${PACKING_ARGS:-} > "$OUT/packing_stdout.txt" 2>&1)
  cat "$OUT/packing.md" 2>/dev/null || tail -n 30 "$OUT/packing_stdout.txt"
}

t install || { echo "install failed"; cat "$OUT/env.txt"; exit 1; }
for s in $STAGES; do
  case $s in
    check|tests|probe|bench|train|packing) echo "== $s"; $s ;;
    *) echo "unknown stage $s (check | tests | probe | bench | train | all)"; exit 2 ;;
  esac
done
cat "$OUT/timings.txt"
