"""Generate samples in bulk from a trained model: python sample.py --workdir=runs/digits --num_samples=50000.

A thin wrapper: the flags and the command live in `jaxdiff.bulk.cli` (installed as `jaxdiff-sample`),
the work in `jaxdiff.bulk.generate`.
"""

from jaxdiff.bulk.cli import run

if __name__ == "__main__":
  run()
