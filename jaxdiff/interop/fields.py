"""Type checks of diffusers config fields (``config.json``, ``scheduler_config.json``) before they
are read: a wrong type is one ConfigError naming the file's field, never a trace later on.

Each converter lists the kind of every field it reads; a field that is absent or null takes the
diffusers default and is not checked here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jaxdiff.errors import ConfigError

__all__ = ["KINDS", "check_field_types"]


def _int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
  return (_int(v) or isinstance(v, float)) and math.isfinite(v)


def _seq(v: Any, item: Callable[[Any], bool]) -> bool:
  return isinstance(v, (list, tuple)) and len(v) > 0 and all(item(x) for x in v)


def _pos_int(v: Any) -> bool:
  return _int(v) and v > 0


# kind -> (check, what the value must be)
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
  "bool": (lambda v: isinstance(v, bool), "true or false"),
  "str": (lambda v: isinstance(v, str), "a string"),
  "int": (_int, "an integer"),
  "pos_int": (_pos_int, "a positive integer"),
  "nonneg_int": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
  "num": (_num, "a finite number"),
  "real": (lambda v: (_int(v) or isinstance(v, float)) and not math.isnan(v), "a number"),
  "pos_num": (lambda v: _num(v) and v > 0, "a finite number > 0"),
  "nonneg_num": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
  "str_list": (lambda v: _seq(v, lambda x: isinstance(x, str)), "a non-empty list of strings"),
  "pos_int_list": (lambda v: _seq(v, _pos_int), "a non-empty list of positive integers"),
  "num_list": (lambda v: _seq(v, _num), "a non-empty list of finite numbers"),
  "size": (lambda v: _pos_int(v) or _seq(v, _pos_int), "a positive integer (or a list of them)"),
}


def check_field_types(config: dict[str, Any], kinds: dict[str, str], where: str) -> None:
  """ConfigError naming `where` (the file) and the first field of `config` whose value is not of
  its kind in `kinds` (a KINDS name); absent and null fields pass."""
  for field, kind in kinds.items():
    value = config.get(field)
    if value is None:
      continue
    ok, what = KINDS[kind]
    if not ok(value):
      raise ConfigError(f"{where}: {field}={value!r} must be {what}.")
