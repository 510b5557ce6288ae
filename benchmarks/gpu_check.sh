#!/usr/bin/env bash
# GPU check: run the test suite on CUDA and the trace-overhead benchmark on the full-size
# SD 1.5 architecture in fp16 (random weights), in under 8 minutes on a fresh machine.
#
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log      # from anywhere
#
# Needs python3 and a CUDA GPU. When python3 already has torch (a CUDA build, say), sdviz
# and its test extra are installed next to it; otherwise a venv .venv-gpu gets
# `pip install torch` first. On a machine without internet, put wheels
# of the missing packages (diffusers, transformers, ...) in a folder and point
# SDVIZ_WHEELS at it. Exits non-zero when the install, the tests or the benchmark fail.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
BUDGET=${SDVIZ_GPU_BUDGET:-470}   # seconds for everything (8 minutes minus a margin)
left() { echo $((BUDGET - (SECONDS - T0))); }
say() { printf '\n== [%3ds] %s\n' $((SECONDS - T0)) "$*"; }

say "python and GPU"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if python3 -c "import torch" 2>/dev/null; then
  PY=python3  # reuse the machine's own (CUDA) torch: install next to it, no venv
elif python3 -m venv .venv-gpu >/dev/null 2>&1; then
  PY=.venv-gpu/bin/python
  say "install torch (python3 has none)"
  timeout 240 "$PY" -m pip install -q torch || { echo "FAIL: could not install torch"; exit 2; }
else
  echo "FAIL: python3 has no torch and cannot make a venv"; exit 2
fi
"$PY" --version

say "install sdviz with its test extra"
pip_ok=1
if [ -n "${SDVIZ_WHEELS:-}" ]; then
  timeout 120 "$PY" -m pip install -q --no-index --find-links "$SDVIZ_WHEELS" -e ".[test]" || pip_ok=0
else
  timeout 180 "$PY" -m pip install -q -e ".[test]" || pip_ok=0
fi
if [ "$pip_ok" = 0 ]; then  # offline with everything but sdviz already there?
  echo "pip could not install the test extra; trying sdviz alone with what is installed"
  timeout 60 "$PY" -m pip install -q --no-deps --no-build-isolation -e . || true
fi
"$PY" - <<'PY' || { echo "FAIL: sdviz or its dependencies do not import (see above)"; exit 2; }
import torch, diffusers, transformers, sdviz, pytest  # noqa: F401
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}")
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("GPU:", torch.cuda.get_device_name(0))
PY

BENCH_S=150
say "test suite on CUDA (SDVIZ_DEVICE=cuda; browser tests skipped), $(( $(left) - BENCH_S )) s at most"
SDVIZ_DEVICE=cuda timeout $(( $(left) - BENCH_S )) "$PY" -m pytest -q -m "not browser" \
  -p no:cacheprovider --timeout 180 --durations 10
tests_rc=$?
[ $tests_rc -eq 124 ] && echo "FAIL: the test suite ran out of time"

say "benchmark: SD 1.5 architecture, fp16, 512 px, traced vs plain"
PYTHONUNBUFFERED=1 timeout $(( $(left) > 30 ? $(left) : 30 )) "$PY" benchmarks/trace_overhead.py \
  --model sd15 --device cuda --dtype float16 --steps 25 --reps 5
bench_rc=$?

say "done in $((SECONDS - T0)) s: tests exit $tests_rc, benchmark exit $bench_rc"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
