#!/usr/bin/env bash
# One accelerator check, ready to run on a GPU (or TPU) machine with JAX for that
# accelerator preinstalled and no network: installs only wheels carried in ./wheels (ignored by
# git), then runs benchmarks/accelerator.py (GPU-sensitive checks, training images/s, TFLOP/s and
# MFU of the cifar10 UNet and DiT-B/2, DDIM-50 throughput, compile times) within ~10 minutes.
#
# Prepare the wheels on a machine with network, for the target's Python (3.12 on the H200 image),
# for what the target lacks among jaxdiff's needs beyond jax/flax/optax/orbax/einops (usually just
# ml_collections; add tqdm, pillow, scikit-learn, absl-py, pytest if that image lacks them):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d wheels ml_collections==1.1.0
#
# Usage:  bash benchmarks/accelerator.sh [accelerator.py options, e.g. --tag=h200 --budget=570]
# Results: benchmarks/results/accelerator.jsonl (appended); a markdown summary on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G "wheels/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/jaxdiff_site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" wheels/*.whl \
    || { echo "installing wheels/ failed" >&2; exit 2; }
  export PYTHONPATH="$site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing=$("$PY" - <<'PY'
import importlib
need = ["jax", "flax", "optax", "orbax.checkpoint", "einops", "ml_collections", "numpy", "PIL", "tqdm", "sklearn", "absl"]
print(" ".join(n for n in need if importlib.util.find_spec(n.split(".")[0]) is None))
PY
)
if [ -n "$missing" ]; then
  echo "missing Python packages: $missing -- carry their wheels in ./wheels (see the top of $0)" >&2
  exit 2
fi
"$PY" -c "import jax; print('# devices:', jax.devices())"
exec timeout 600 "$PY" benchmarks/accelerator.py "$@"
