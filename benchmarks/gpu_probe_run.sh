#!/usr/bin/env bash
# On the lent H100 (see benchmarks/RESULTS.md): install tune-doctor beside the image's torch without touching it,
# then run the probe suite twice: the image as it is, and with xformers 0.0.35 (built for torch 2.10.0+cu128)
# and bitsandbytes 0.50.2 added. Wheels come from .whl/ (carried; the machine has no network).
set -u -o pipefail
export PYTHONUNBUFFERED=1 DOCTOR_CACHE_DIR=/tmp/doctor-cache NO_COLOR=1 COLUMNS=160
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
REPO=$(pwd)
rm -rf /tmp/site /tmp/extra /tmp/doctor-cache "$REPO/build" ~/.triton/cache /tmp/torchinductor_"$(whoami)"  # a warm machine keeps them: every run starts cold
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/base/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$REPO" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/extra .whl/xf/*.whl .whl/bnb/*.whl || exit 1
cd /tmp
t() { local s=$(date +%s.%N); "$@"; local rc=$?; local e=$(date +%s.%N); awk -v a="$s" -v b="$e" -v rc=$rc -v c="$*" 'BEGIN{printf "%.2f s rc=%s: %s\n", b-a, rc, c}' >> "$OUT/timings.txt"; return $rc; }
run_suite() {  # $1 = label, PYTHONPATH set by the caller
  local L=$1
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))" > "$OUT/$L.env.txt" 2>&1
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|triton|xformers|bitsandbytes|flash|transformers|peft|accelerate) " >> "$OUT/$L.env.txt"
  t python3 -m doctor probe --json > "$OUT/$L.probe.json" 2> "$OUT/$L.probe.err"      # cold: every probe runs
  python3 -m doctor probe > "$OUT/$L.probe.txt" 2>&1                                 # warm: cached verdict + dispatch tables
  for i in 1 2 3 4 5; do t python3 -m doctor check --json > /dev/null 2>&1; done      # warm check, cached verdicts
  python3 -m doctor check -v > "$OUT/$L.check.txt" 2>&1
  DOCTOR_BACKEND_ATTENTION=xformers python3 -m doctor check --json > /dev/null 2> "$OUT/$L.override.err"; echo "override rc=$?" >> "$OUT/$L.override.err"
}
echo "== clean: the image as it is" >> "$OUT/timings.txt"
PYTHONPATH=/tmp/site run_suite clean
echo "== mismatched: + xformers 0.0.35, bitsandbytes 0.50.2" >> "$OUT/timings.txt"
PYTHONPATH=/tmp/extra:/tmp/site run_suite xf
echo "== anchors (ANCHORS.md): same machine, same run" >> "$OUT/timings.txt"
for i in 1 2 3; do PYTHONPATH=/tmp/site t python3 -m doctor check --json --no-probes > /dev/null 2>&1; done
for i in 1 2 3; do t python3 -m torch.utils.collect_env > /dev/null 2>&1; done
for i in 1 2 3; do PYTHONPATH=/tmp/extra t python3 -m xformers.info > /dev/null 2>&1; done
echo "== pytest -m gpu" >> "$OUT/timings.txt"
(cd "$REPO" && PYTHONPATH=/tmp/site python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tail -15) > "$OUT/pytest_gpu.txt"
cat "$OUT/timings.txt"
# at most 8 files come back: ship the per-run outputs as one archive
(cd "$OUT" && tar czf runs.tar.gz clean.* xf.* && rm -f clean.* xf.*)
