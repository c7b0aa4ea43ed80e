"""The autoencoder of a latent-diffusion run (``config.latent.vae``): loaded once, recorded in the workdir
and checked against it, encoding image batches as training reads them, decoding what the model samples.

A latent workdir holds ``latent_vae.json``: the identity of the autoencoder it was trained with (its
source path and the digest of its weights and hyperparameters, ``autoencoder_identity``). Resuming
the run (train.py) or sampling it (sample.py, ``jaxdiff.load``) with an autoencoder of another digest
is refused, naming both; the same weights under another path are accepted (a moved folder).

Encoding on the fly: with ``config.latent.vae`` set and ``config.data.name`` an image set (digits,
``tfds/<name>``), the input pipeline yields images (``jaxdiff.data.create_dataset``) and
``encode_stream`` turns each batch into ``z = mean + std * eps`` scaled and shifted as the
autoencoder says, ``eps`` drawn from (seed, process, step) alone, so a resumed run is the same run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiff import fileio
from jaxdiff.data import base
from jaxdiff.data.latent_images import encodes_on_the_fly
from jaxdiff.errors import CheckpointError
from jaxdiff.interop.vae import vae_digest
from jaxdiff.models.autoencoder import (
  AutoencoderKL,
  config_fields,
  decode_latents,
  denormalize_latents,
  encode_images,
  normalize_latents,
)
from jaxdiff.training.autoencoder_step import load_autoencoder

__all__ = [
  "LATENT_RECORD",
  "TAG_ENCODE_NOISE",
  "LatentSpace",
  "autoencoder_identity",
  "open_latent_space",
  "check_latent_record",
  "encode_stream",
  "latent_inputs",
]

LATENT_RECORD = "latent_vae.json"  # in a latent-diffusion workdir: the autoencoder it was trained with
TAG_ENCODE_NOISE = 12  # the per-step posterior draw of encoding on the fly (jaxdiff.data.base tags)


def autoencoder_identity(src: str, model: AutoencoderKL, variables: dict) -> dict:
  """What an encoded set or a latent workdir records about its autoencoder."""
  return {
    "source": src,
    "digest": vae_digest(variables, model),
    "config": config_fields(model),
    "scaling": {
      k: getattr(model, k) if not isinstance(getattr(model, k), tuple) else list(getattr(model, k))
      for k in ("scaling_factor", "shift_factor", "latents_mean", "latents_std")
    },
  }


class LatentSpace:
  """A loaded autoencoder with its identity: ``decode`` (normalised latents -> images in [-1, 1]) and
  ``encode`` (images in [-1, 1] and noise -> normalised latent samples), each compiled once per shape."""

  def __init__(self, source: str, model: AutoencoderKL, variables: dict, decode_batch_size: int = 64):
    self.source, self.model, self.variables = source, model, variables
    self.identity = autoencoder_identity(source, model, variables)
    chunk = int(decode_batch_size)
    self._decode = jax.jit(lambda v, z: decode_latents(model, v, denormalize_latents(model, z), chunk))

    def encode(v, x, eps):
      mean, logvar = encode_images(model, v, x, chunk)
      return normalize_latents(model, mean + jnp.exp(0.5 * logvar) * eps)

    self._encode = jax.jit(encode)

  @property
  def digest(self) -> str:
    return self.identity["digest"]

  def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The latent (H, W, C) of images of `image_shape` (H, W, C)."""
    f = self.model.downsample_factor
    return (int(image_shape[0]) // f, int(image_shape[1]) // f, int(self.model.latent_channels))

  def image_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The decoded (H, W, C) of latents of `latent_shape` (H, W, C)."""
    f = self.model.downsample_factor
    return (int(latent_shape[0]) * f, int(latent_shape[1]) * f, int(self.model.out_channels))

  def decode(self, z: Any) -> np.ndarray:
    """Normalised latents [b, h, w, c] -> float32 images [b, H, W, C] clipped to [-1, 1]."""
    return np.clip(np.asarray(self._decode(self.variables, jnp.asarray(z, jnp.float32))), -1.0, 1.0)

  def encode(self, x: Any, eps: Any) -> np.ndarray:
    """Images [b, H, W, C] in [-1, 1] -> normalised posterior samples ``mean + std * eps``."""
    return np.asarray(
      self._encode(self.variables, jnp.asarray(x, jnp.float32), jnp.asarray(eps, jnp.float32))
    )


def open_latent_space(config: ml_collections.ConfigDict) -> LatentSpace | None:
  """The autoencoder of config.latent.vae, loaded; None in pixel space."""
  src = str(config.latent.vae)
  if not src:
    return None
  model, variables = load_autoencoder(src)
  return LatentSpace(src, model, variables, int(config.latent.decode_batch_size))


def check_latent_record(
  workdir: str, space: LatentSpace | None, *, write: bool, error: type = CheckpointError
) -> None:
  """Compares the autoencoder of a run with the one its workdir records (``latent_vae.json``) and raises
  `error` naming both when they differ; records it when the workdir has no record yet and `write`."""
  path = fileio.join(workdir, LATENT_RECORD)
  old = json.loads(fileio.read_text(path)) if fileio.exists(path) else None
  if old is None:
    if space is not None and write:
      fileio.atomic_write_text(path, json.dumps(space.identity, indent=2, sort_keys=True) + "\n")
    return
  if space is None:
    raise error(
      f"{workdir} was trained in the latent space of the autoencoder {old['source']} (digest {old['digest']}, "
      f"{path}), but config.latent.vae is empty: set --config.latent.vae={old['source']} (or give a new "
      "--workdir for a pixel-space run)."
    )
  if old["digest"] != space.digest:
    raise error(
      f"{workdir} was trained with the autoencoder {old['source']} (digest {old['digest']}), not with "
      f"{space.source} (digest {space.digest}): its latents mean something else to this model. Give "
      f"--config.latent.vae the autoencoder of {path} (restore it at {old['source']} if it was retrained "
      "there), or train into a new --workdir."
    )


def encode_stream(
  stream: Iterator[dict],
  space: LatentSpace,
  *,
  seed: int,
  process_index: int,
  start_step: int,
) -> Iterator[dict]:
  """Batches of images -> the same batches with "x" the normalised latent samples; the noise of the
  draw of step k is a function of (seed, process_index, k) alone."""
  step = int(start_step)
  for batch in stream:
    x = np.asarray(batch["x"], np.float32)
    rng = base.rng_for(seed, TAG_ENCODE_NOISE, process_index, step)
    eps = rng.standard_normal((len(x), *space.latent_shape(x.shape[1:])), dtype=np.float32)
    yield {**batch, "x": space.encode(x, eps)}
    step += 1


def latent_inputs(
  stream: Iterator[dict], config: ml_collections.ConfigDict, space: LatentSpace | None, start_step: int
) -> Iterator[dict]:
  """The training batches of `config`: `stream` encoded by `space` when config.data is an image set read
  in latent space (`jaxdiff.data.latent_images`), else `stream` itself (pixels, or an encoded set)."""
  if space is None or not encodes_on_the_fly(config):
    return stream
  return encode_stream(
    stream, space, seed=int(config.seed), process_index=jax.process_index(), start_step=start_step
  )
