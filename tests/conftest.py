"""Shared test set-up: CPU only, repo root importable (configs/ is not a package)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def fast_compiles():
  """Compile with most XLA optimisations off (behaviour, not speed, is tested); modules opt in
  with ``pytestmark = pytest.mark.usefixtures("fast_compiles")``."""
  import jax

  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
