"""Entry points of the console scripts pyproject.toml installs, for the commands whose module has no
argument-free entry of its own: each runs its command line as the `python -m` form does (one line
and exit status 2 for a user error). `jaxdiff-train`, `jaxdiff-sample`, `jaxdiff-info` and
`jaxdiff-interop` point at their modules directly.
"""

from __future__ import annotations

import sys

from jaxdiff.errors import run_cli
from jaxdiff.evaluation import cli as evaluation_cli
from jaxdiff.evaluation import fid_stats as fid_stats_cli

__all__ = ["evaluate", "likelihood", "fid_stats"]


def evaluate() -> int:
  """`jaxdiff-evaluate`: `python -m jaxdiff.evaluation` (sample quality, or --likelihood)."""
  return run_cli(evaluation_cli.main, prog="jaxdiff-evaluate")


def likelihood() -> int:
  """`jaxdiff-likelihood --workdir=W`: `python -m jaxdiff.evaluation --likelihood --workdir=W`."""
  return run_cli(evaluation_cli.main, ["--likelihood", *sys.argv[1:]], prog="jaxdiff-likelihood")


def fid_stats() -> int:
  """`jaxdiff-fid-stats`: `python -m jaxdiff.evaluation.fid_stats` (FID reference statistics)."""
  return run_cli(fid_stats_cli.main, prog="jaxdiff-fid-stats")
