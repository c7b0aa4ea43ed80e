"""Command line preview of a configured data set: writes a PNG of real training batches.

    python -m jaxdiff.data.preview --config=configs/digits.py --out=/tmp/digits.png
    python -m jaxdiff.data.preview --config=configs/default.py \
        --config.data.name=toy2d/s_curve --config.data.num_classes=0 --out=/tmp/s_curve.png

Images become a grid (tiny ones upscaled with nearest neighbour), 2-D points a scatter plot.
The function itself is `jaxdiff.data.preview(config, path, num)`. Flags are defined only when
this runs as a program, and the module stays callable as that function even after
`import jaxdiff.data.preview` (which rebinds the package attribute to the module).
"""

import sys
import types

from absl import app, flags
from ml_collections import config_flags

from jaxdiff.data.datasets import dataset_info
from jaxdiff.data.datasets import preview as _preview
from jaxdiff.errors import USER_ERRORS, user_message


def _run() -> None:
  config_flag = config_flags.DEFINE_config_file("config", None, "ml_collections config file (get_config()).")
  out_flag = flags.DEFINE_string("out", "preview.png", "Where to write the PNG.")
  num_flag = flags.DEFINE_integer("num", None, "Examples to show (default: 64 images or 2048 points).")

  def main(argv) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flag.value
    if config is None:
      raise app.UsageError("--config=configs/<name>.py is required")
    try:
      print(dataset_info(config))
      path = _preview(config, out_flag.value, num_flag.value)
    except USER_ERRORS as e:  # bad config or missing data set: the message says what to do
      sys.exit(f"error: {user_message(e)}")
    print(f"wrote {path}")

  app.run(main)


class _CallableModule(types.ModuleType):
  """Keeps `jaxdiff.data.preview(config, path)` working when this module shadows the function."""

  def __call__(self, *args, **kwargs):
    return _preview(*args, **kwargs)


if __name__ == "__main__":
  _run()
else:
  sys.modules[__name__].__class__ = _CallableModule
