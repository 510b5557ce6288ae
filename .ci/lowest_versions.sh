#!/usr/bin/env bash
# CI, second environment: the lowest transformers and diffusers that pyproject.toml declares.
#
# A lower bound is only true if it is tested: transformers 5.0-5.5 load the embedded text
# encoder with random weights and only a warning, diffusers 0.35.1 does not import under
# transformers 5. This script makes a throwaway venv with exactly the declared lower bounds
# of transformers and diffusers (read from pyproject.toml, so the two cannot drift), the
# other dependencies as pip resolves them, and runs the tests marked `lowest` there: the
# embedded model loads exactly the weights on disk and generates, broken folders are refused.
#
# Exit status: pytest's (0 when they pass); 3 when the environment cannot be installed.
# .ci/run calls this after the README's test command; a failure here fails CI.
set -uo pipefail
cd "$(dirname "$0")/.."

# The files holding the tests marked `lowest` (collecting the whole suite would import
# test-only packages this environment does not install).
TESTS=(tests/test_load_weights.py)

# pyproject.toml's dependencies with transformers and diffusers pinned to their lower
# bounds, less the notebook and plotting ones (the marked tests import none of them).
reqs=$(python3 - <<'PY'
import re

text = open("pyproject.toml").read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
for req in re.findall(r'^\s*"([^"]+)"', block, re.M):
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    if name in ("transformers", "diffusers"):
        low = re.search(r">=\s*([^,;\s]+)", req)
        print(f"{name}=={low.group(1)}" if low else f"{name}-declares-no-lower-bound")
    elif name not in ("jupyterlab", "ipywidgets", "jupytext", "matplotlib"):
        print(req)
PY
)
venv=$(mktemp -d "${TMPDIR:-/tmp}/sdviz-lowest.XXXXXX")
trap 'rm -rf "$venv"' EXIT

echo "lowest declared versions:" $(grep -E "^(transformers|diffusers)==" <<<"$reqs") >&2
# torch==2.13.0 is the CPU wheel (as in the README's command); sdviz itself last, without
# the dependencies left out above.
if ! { python3 -m venv "$venv" \
  && "$venv/bin/pip" install -q torch==2.13.0 \
  && "$venv/bin/pip" install -q $reqs pytest \
  && "$venv/bin/pip" install -q --no-deps -e .; }; then
  echo "error: could not install sdviz with its lowest declared versions:" $reqs >&2
  exit 3
fi
"$venv/bin/pip" list 2>/dev/null \
  | grep -iE "^(torch|transformers|diffusers|safetensors|accelerate|huggingface.hub|tokenizers) " >&2

"$venv/bin/python" -m pytest -p no:cacheprovider -m lowest "${TESTS[@]}"
