"""Shared test set-up: CPU only. The configs need no path set-up: they import jaxdiff.configs.

The packages of the `dev` extra (torch and diffusers for the parity tests, pdoc, TFDS, ...) are
required: a test that `pytest.importorskip`s one of them fails with the install command instead of
skipping, so a missing reference never passes for a green run."""

import os
import re

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

# top-level modules of pyproject.toml's dev extra that tests import (the reference implementations)
DEV_EXTRA_MODULES = {"torch", "diffusers", "pdoc", "tensorflow_datasets", "scipy", "matplotlib"}
_IMPORT_SKIP = re.compile(r"could not import '([\w.]+)'")


def _missing_dev_module(report) -> str | None:
  """The dev-extra module whose failed import made this report a skip, if that is why it skipped."""
  if not report.skipped:
    return None
  m = _IMPORT_SKIP.search(str(report.longrepr))
  return m.group(1) if m and m.group(1).split(".")[0] in DEV_EXTRA_MODULES else None


def _fail_if_dev_module_missing(report) -> None:
  name = _missing_dev_module(report)
  if name:
    report.outcome = "failed"
    report.longrepr = (
      f"could not import {name}: {name.split('.')[0]} is part of the dev extra, which the tests need "
      f'(`pip install -e ".[dev]"`, or `make setup`); this test would otherwise have been skipped'
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
  outcome = yield
  _fail_if_dev_module_missing(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  _fail_if_dev_module_missing(outcome.get_result())


@pytest.fixture(scope="module")
def fast_compiles():
  """Compile with most XLA optimisations off (behaviour, not speed, is tested); modules opt in
  with ``pytestmark = pytest.mark.usefixtures("fast_compiles")``."""
  import jax

  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
