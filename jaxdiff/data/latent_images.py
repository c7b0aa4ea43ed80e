"""Image sets encoded on the fly: ``config.latent.vae`` set and ``config.data.name`` an image set (digits,
``tfds/<name>``) instead of an encoded set ("latents").

As for an encoded set, ``config.data.image_size`` / ``channels`` describe what the diffusion model
takes: the latent. The images the pipeline reads are the autoencoder's: ``image_size`` times its
downsampling factor, its input channels (`pixel_config`). The pipeline yields those images;
``jaxdiff.training.latent_space.encode_stream`` encodes each batch as training reads it. The
autoencoder's geometry is read from its config.json alone (a diffusers ``AutoencoderKL`` folder or a
pipeline's ``vae/``, or a jaxdiff autoencoder workdir), so no weights are loaded to validate a config.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from jaxdiff import fileio
from jaxdiff.data import base
from jaxdiff.errors import ConfigError

__all__ = ["Geometry", "encodes_on_the_fly", "autoencoder_geometry", "pixel_config"]

ON_THE_FLY_FAMILIES = ("digits", "tfds")


class Geometry(NamedTuple):
  factor: int  # image size / latent size
  in_channels: int
  latent_channels: int


def encodes_on_the_fly(config) -> bool:
  """Whether `config` (complete) trains in config.latent.vae's latents of an image set read as images."""
  vae = str(config.get("latent", {}).get("vae", "") or "")
  return bool(vae) and base.parse_name(config.data.name)[0] in ON_THE_FLY_FAMILIES


def _config_json(src: str) -> dict:
  for path in (fileio.join(src, "config.json"), fileio.join(src, "vae", "config.json")):
    if fileio.exists(path):
      return json.loads(fileio.read_text(path))
  raise ConfigError(
    f"config.latent.vae={src!r} has no config.json: give a diffusers AutoencoderKL folder (or a pipeline "
    "folder with vae/) or a jaxdiff autoencoder workdir"
  )


def autoencoder_geometry(src: str) -> Geometry:
  """The downsampling factor and channel counts of the autoencoder at `src`, from its config.json."""
  cfg = _config_json(src)
  try:
    if "_class_name" in cfg:  # diffusers
      levels, cin, lat = (
        len(cfg["block_out_channels"]),
        cfg.get("in_channels", 3),
        cfg.get("latent_channels", 4),
      )
    else:  # a jaxdiff workdir (config.model.name = "autoencoder_kl")
      a = cfg["autoencoder"]
      levels, cin, lat = len(a["block_out_channels"]), cfg["data"]["channels"], a["latent_channels"]
  except (KeyError, TypeError):
    raise ConfigError(
      f"config.latent.vae={src!r}: its config.json does not describe an autoencoder"
    ) from None
  return Geometry(2 ** (levels - 1), int(cin), int(lat))


def pixel_config(config):
  """A pixel-space copy of `config` whose data fields describe the images to encode (ConfigError naming the field
  when config.data.channels is not the autoencoder's latent channel count)."""
  g = autoencoder_geometry(str(config.latent.vae))
  if int(config.data.channels) != g.latent_channels:
    raise ConfigError(
      f"config.data.channels={config.data.channels}, but the autoencoder {config.latent.vae} makes "
      f"{g.latent_channels}-channel latents: with config.latent.vae set, config.data.image_size / channels "
      f"are the latent's (set --config.data.channels={g.latent_channels})"
    )
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.data.image_size = int(config.data.image_size) * g.factor
    out.data.channels = g.in_channels
    out.latent.vae = ""  # the images themselves: a pixel-space data config
  return out
