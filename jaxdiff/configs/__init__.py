"""The package's configs (big_vision style): `default` is the base every config builds on.

    from jaxdiff.configs import default
    config = default.get_config()        # every field, with its default
    config = with_defaults(partial)      # a partial config / an old config.json, completed

`digits` is the embedded demo's recipe (its data ship with the package). The files in the
repository's top-level configs/ start from these and override only what differs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxdiff.configs import default

__all__ = ["default", "with_defaults"]

log = logging.getLogger(__name__)


def _as_dict(config: Any) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return {k: _as_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
  raise TypeError(f"a config must be an ml_collections.ConfigDict or a mapping, got {type(config).__name__}")


def _overlay(base: dict, values: dict, prefix: str, added: list[str]) -> dict:
  """base with values written over it, section by section; `added` collects base's fields that
  values lacked. Fields base does not know are kept (validate_config names them)."""
  out = dict(base)
  for key in base:
    if key not in values:
      added.append(prefix + key)
  for key, value in values.items():
    if isinstance(base.get(key), dict) and isinstance(value, dict):
      out[key] = _overlay(base[key], value, f"{prefix}{key}.", added)
    else:
      out[key] = value
  return out


def with_defaults(config: Any, *, note: str | None = None) -> ml_collections.ConfigDict:
  """A new, complete config: `default.get_config()` with `config` (a ConfigDict or a nested
  mapping, possibly partial) overlaid on it. With `note` (where the config came from), the fields
  that were missing and now take their defaults are logged, e.g. for an old workdir's config.json.
  """
  added: list[str] = []
  merged = _overlay(default.get_config().to_dict(), _as_dict(config), "", added)
  if note and added:
    log.warning(
      "%s predates %d config field(s); they take their defaults: %s", note, len(added), ", ".join(added)
    )
  return ml_collections.ConfigDict(merged)
