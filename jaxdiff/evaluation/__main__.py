"""`python -m jaxdiff.evaluation --samples=... --dataset=digits|toy2d/<name>|fid --out=report.json`."""

import sys

from jaxdiff.errors import run_cli
from jaxdiff.evaluation.cli import PROG, main

if __name__ == "__main__":
  sys.exit(run_cli(main, prog=PROG))
