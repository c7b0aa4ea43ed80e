"""The default config, for `--config=configs/default.py`: the package's `jaxdiff/configs/default.py`
(every field, documented there). Other configs start from it with
`from jaxdiff.configs import default` and override only what differs.
"""

from jaxdiff.configs.default import get_config

__all__ = ["get_config"]
