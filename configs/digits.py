"""The embedded demo: class-conditional 8x8 digits on a CPU (the recipe lives in the package,
`jaxdiff/configs/digits.py`, with its data).

    python train.py --config=configs/digits.py --workdir=runs/digits
"""

from jaxdiff.configs.digits import get_config

__all__ = ["get_config"]
