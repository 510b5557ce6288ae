#!/usr/bin/env bash
# GPU check: run the test suite on CUDA and the trace-overhead benchmark on the full-size
# SD 1.5 architecture in fp16 (random weights), in under 8 minutes on a fresh machine.
#
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log      # from anywhere
#
# Steps: install; the test suite with SDVIZ_DEVICE=cuda (tests/conftest.py's `device`
# fixture); benchmarks/trace_overhead.py on SD 1.5 in fp16; then, with the time left, the
# lessons in smoke mode on a saved SD 1.5 architecture (SDVIZ_LESSON_MODEL).
# Needs python3 and a CUDA GPU. When python3 already has torch (a CUDA build, say), sdviz
# and its test extra are installed next to it; otherwise a venv .venv-gpu gets
# `pip install torch` first. On a machine without internet, put wheels
# of the missing packages (diffusers, ipywidgets, jupytext, ...) in a folder and point
# SDVIZ_WHEELS at it: they are installed with --no-deps, so the folder must hold their
# dependencies too (`pip download` them for the machine's Python and platform).
# Exits non-zero when the install, the tests or the benchmark fail.
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
export PIP_DEFAULT_TIMEOUT=15 PIP_RETRIES=1  # fail fast when offline
if [ -n "${SDVIZ_WHEELS:-}" ]; then
  # the folder holds what the machine lacks, resolved elsewhere: install it as it is
  timeout 120 "$PY" -m pip install -q --no-index --no-deps "$SDVIZ_WHEELS"/*.whl || pip_ok=0
  # no build isolation: an isolated build would look for setuptools in the folder too
  timeout 120 "$PY" -m pip install -q --no-index --find-links "$SDVIZ_WHEELS" \
    --no-build-isolation -e ".[test]" || pip_ok=0
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

per_test() { "$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout $1"; }

say "test suite on CUDA (SDVIZ_DEVICE=cuda; browser tests and lessons apart), 200 s at most"
SDVIZ_DEVICE=cuda timeout 200 "$PY" -m pytest -q -m "not browser" --ignore=tests/test_lessons.py \
  -p no:cacheprovider $(per_test 150) --durations 10
tests_rc=$?
[ $tests_rc -eq 124 ] && echo "FAIL: the test suite ran out of time"

say "benchmark: SD 1.5 architecture, fp16, 512 px, traced vs plain"
PYTHONUNBUFFERED=1 timeout 120 "$PY" benchmarks/trace_overhead.py \
  --model sd15 --device cuda --dtype float16 --steps 25 --reps 5
bench_rc=$?

lessons_rc=0
if [ "$(left)" -gt 90 ]; then
  say "lessons in smoke mode on the SD 1.5 architecture (fp16 on CUDA), $(( $(left) - 10 )) s at most"
  MODEL_DIR=$(mktemp -d)/sd15
  timeout 60 "$PY" - "$MODEL_DIR" <<'PY'
import sys, torch
from sdviz.builder import sd_architecture
with torch.device("cuda"):  # random weights made on the GPU, saved as fp16 safetensors
    sd_architecture("1.5", dtype=torch.float16).save_pretrained(sys.argv[1])
PY
  # KILL, not TERM: nbclient catches SIGTERM to shut its kernel down, so TERM fails the
  # lesson that is running (a false failure: "Kernel died") and pytest goes on past the limit
  SDVIZ_DEVICE=cuda SDVIZ_LESSON_MODEL="$MODEL_DIR" timeout -s KILL $(( $(left) - 10 )) "$PY" -m pytest -q \
    tests/test_lessons.py -p no:cacheprovider $(per_test 120) --durations 10
  lessons_rc=$?
  [ $lessons_rc -eq 137 ] && echo "lessons: out of time (not counted as a failure)" && lessons_rc=0
else
  say "lessons on SD 1.5 skipped: $(left) s left"
fi

say "done in $((SECONDS - T0)) s: tests exit $tests_rc, benchmark exit $bench_rc, lessons exit $lessons_rc"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $lessons_rc -eq 0 ]
