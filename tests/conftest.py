"""Shared test set-up: CPU only. The configs need no path set-up: they import jaxdiff.configs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
