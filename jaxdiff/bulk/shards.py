"""Sample shards on disk: the format lives in `jaxdiff.shards` (shared by bulk and evaluation);
this module keeps the old import path."""

from jaxdiff.shards import (
  SHARD_PATTERN,
  check_shard,
  layout,
  parse_shard_name,
  read_shard,
  shard_name,
  temp_name,
  write_shard,
)

__all__ = [
  "SHARD_PATTERN",
  "shard_name",
  "parse_shard_name",
  "layout",
  "write_shard",
  "check_shard",
  "read_shard",
  "temp_name",
]
