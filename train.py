"""Train a diffusion model: python train.py --config=configs/digits.py --workdir=runs/digits.

A thin wrapper: the flags and the command live in `jaxdiff.training.cli` (installed as
`jaxdiff-train`), the work in `jaxdiff.training.train`.
"""

from jaxdiff.training.cli import run

if __name__ == "__main__":
  run()
