#!/usr/bin/env bash
# On the lent H100: populate real Triton and Inductor caches through the probes, then check that
# `doctor cache status/verify` and `doctor check` read them without false alarms.
set -u -o pipefail
export PYTHONUNBUFFERED=1 DOCTOR_CACHE_DIR=/tmp/doctor-cache NO_COLOR=1 COLUMNS=160
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
REPO=$(pwd)
rm -rf /tmp/site /tmp/doctor-cache "$REPO/build"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/base/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$REPO" || exit 1
export PYTHONPATH=/tmp/site
cd /tmp
python3 -m doctor probe --only triton torch.compile --json > "$OUT/probe.json" 2>&1
python3 -m doctor cache status --json > "$OUT/cache_status.json" 2> "$OUT/cache_status.err"; echo "status rc=$?" >> "$OUT/rc.txt"
python3 -m doctor cache verify --json > "$OUT/cache_verify.json" 2> "$OUT/cache_verify.err"; echo "verify rc=$?" >> "$OUT/rc.txt"
python3 -m doctor cache status > "$OUT/cache_status.txt" 2>&1
python3 -m doctor check > "$OUT/check.txt" 2>&1; echo "check rc=$?" >> "$OUT/rc.txt"
cat "$OUT/rc.txt"
