"""`python -m jaxdiff.evaluation --samples=... --dataset=digits|toy2d/<name>|fid --out=report.json`."""

import sys

from jaxdiff.evaluation.cli import main, run_cli

if __name__ == "__main__":
  sys.exit(run_cli(main))
