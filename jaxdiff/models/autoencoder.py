"""The Stable Diffusion autoencoder family (diffusers' ``AutoencoderKL``) in Flax linen, NHWC.

An encoder maps images in [-1, 1] to the mean and log-variance of a diagonal Gaussian over latents
(``2 * latent_channels`` channels, ``2 ** (levels - 1)`` times smaller); the mirrored decoder maps
latents back to images. Field names follow diffusers' config, so SD 1.x/2.x, SDXL and the
16-channel SD3 / Flux autoencoders are instances of this one module (``jaxdiff.interop.load_diffusers_vae``).

    mean, logvar = model.apply(variables, x, method=model.encode)
    x = model.apply(variables, z, method=model.decode)
    z_model = normalize_latents(model, z)     # (z - shift_factor) * scaling_factor: what diffusion sees

``encode_images`` / ``decode_latents`` run large batches a chunk at a time (``jax.lax.map``), so the
peak memory is that of one chunk whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ArgumentError, ConfigError
from jaxdiff.models.attention import AttentionBlock
from jaxdiff.models.layers import Downsample, GroupNorm, Upsample, conv3x3

__all__ = [
  "AutoencoderKL",
  "LOGVAR_RANGE",
  "normalize_latents",
  "denormalize_latents",
  "encode_images",
  "decode_latents",
  "latent_shape",
]

Array = jax.Array
Dtype = Any

LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps the log-variance to this
_EPS = 1e-6  # every GroupNorm of the family (diffusers' resnet_eps / norm eps)


class VAEResBlock(nn.Module):
  """GroupNorm, SiLU, 3x3 conv, GroupNorm, SiLU, 3x3 conv, plus a 1x1 conv of the input when the
  channel count changes (diffusers' ``ResnetBlock2D`` without time conditioning)."""

  out_channels: int
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    norm = lambda name: GroupNorm(self.num_groups, _EPS, self.dtype, self.param_dtype, name=name)
    h = conv3x3(self.out_channels, self.dtype, self.param_dtype, "conv1")(nn.silu(norm("norm1")(x)))
    h = conv3x3(self.out_channels, self.dtype, self.param_dtype, "conv2")(nn.silu(norm("norm2")(h)))
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(
        self.out_channels, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype, name="conv_shortcut"
      )(x)
    return x + h


class MidBlock(nn.Module):
  """ResNet block, optional single-head self-attention, ResNet block (diffusers' ``UNetMidBlock2D``)."""

  channels: int
  num_groups: int = 32
  add_attention: bool = True
  attention_impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(num_groups=self.num_groups, dtype=self.dtype, param_dtype=self.param_dtype)
    x = VAEResBlock(self.channels, **kw, name="resnets_0")(x)
    if self.add_attention:
      x = AttentionBlock(
        num_heads=1, implementation=self.attention_impl, epsilon=_EPS, **kw, name="attentions_0"
      )(x)
    return VAEResBlock(self.channels, **kw, name="resnets_1")(x)


class Encoder(nn.Module):
  """conv_in, down levels (ResNet blocks, then a stride-2 conv except at the last level), mid
  block, GroupNorm-SiLU-conv_out to ``2 * latent_channels``."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  num_groups: int
  mid_block_add_attention: bool
  attention_impl: str
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = conv3x3(self.block_out_channels[0], name="conv_in", **kw)(x)
    last = len(self.block_out_channels) - 1
    for i, ch in enumerate(self.block_out_channels):
      for j in range(self.layers_per_block):
        h = VAEResBlock(ch, self.num_groups, **kw, name=f"down_blocks_{i}_resnets_{j}")(h)
      if i != last:
        h = Downsample(ch, padding=0, **kw, name=f"down_blocks_{i}_downsamplers_0")(h)
    h = MidBlock(
      self.block_out_channels[-1],
      self.num_groups,
      self.mid_block_add_attention,
      self.attention_impl,
      **kw,
      name="mid_block",
    )(h)
    h = nn.silu(GroupNorm(self.num_groups, _EPS, **kw, name="conv_norm_out")(h))
    return conv3x3(2 * self.latent_channels, name="conv_out", **kw)(h)


class Decoder(nn.Module):
  """conv_in, mid block, up levels in reverse order (``layers_per_block + 1`` ResNet blocks, then
  nearest-neighbour 2x and a conv except at the last level), GroupNorm-SiLU-conv_out."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  num_groups: int
  mid_block_add_attention: bool
  attention_impl: str
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, z: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    channels = tuple(reversed(self.block_out_channels))
    h = conv3x3(channels[0], name="conv_in", **kw)(z)
    h = MidBlock(
      channels[0], self.num_groups, self.mid_block_add_attention, self.attention_impl, **kw, name="mid_block"
    )(h)
    for i, ch in enumerate(channels):
      for j in range(self.layers_per_block + 1):
        h = VAEResBlock(ch, self.num_groups, **kw, name=f"up_blocks_{i}_resnets_{j}")(h)
      if i != len(channels) - 1:
        h = Upsample(ch, **kw, name=f"up_blocks_{i}_upsamplers_0")(h)
    h = nn.silu(GroupNorm(self.num_groups, _EPS, **kw, name="conv_norm_out")(h))
    return conv3x3(self.out_channels, name="conv_out", **kw)(h)


class AutoencoderKL(nn.Module):
  """The KL-regularised autoencoder of Stable Diffusion (fields as in diffusers' ``AutoencoderKL`` config).

  ``encode(x) -> (mean, logvar)`` of the latent posterior (logvar clamped to ``LOGVAR_RANGE`` as
  diffusers does); ``decode(z) -> x``; ``__call__(x)`` draws ``z = mean + std * eps`` from the
  ``"latent"`` rng stream (or takes the mean when ``sample_posterior=False``) and returns
  ``(reconstruction, mean, logvar)`` for training. Inputs and outputs are NHWC float32 in [-1, 1];
  ``dtype="bfloat16"`` computes in bf16 with float32 parameters and float32 GroupNorm statistics.
  ``scaling_factor`` / ``shift_factor`` (and per-channel ``latents_mean`` / ``latents_std`` where a
  checkpoint gives them) map latents to the unit-scale space the diffusion model sees
  (``normalize_latents``).
  """

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  mid_block_add_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  latents_mean: Sequence[float] | None = None
  latents_std: Sequence[float] | None = None
  sample_size: int = 32
  attention_impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def downsample_factor(self) -> int:
    """How many times smaller a latent is than its image on each side."""
    return 2 ** (len(self.block_out_channels) - 1)

  def _parts(self) -> dict:
    return dict(
      block_out_channels=tuple(self.block_out_channels),
      layers_per_block=self.layers_per_block,
      num_groups=self.norm_num_groups,
      mid_block_add_attention=self.mid_block_add_attention,
      attention_impl=self.attention_impl,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )

  def setup(self) -> None:
    if not self.block_out_channels:
      raise ArgumentError("AutoencoderKL.block_out_channels needs at least one level")
    self.encoder = Encoder(latent_channels=self.latent_channels, **self._parts())
    self.decoder = Decoder(out_channels=self.out_channels, **self._parts())
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1), **kw) if self.use_quant_conv else None
    self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), **kw) if self.use_post_quant_conv else None

  def encode(self, x: Array) -> tuple[Array, Array]:
    """(mean, logvar) of q(z | x), float32 ``[B, H/f, W/f, latent_channels]`` each."""
    moments = self.encoder(jnp.asarray(x, self.dtype))
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    moments = moments.astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: Array) -> Array:
    """Images (float32, about [-1, 1]) from raw latents (not the normalised ones)."""
    z = jnp.asarray(z, self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x: Array, sample_posterior: bool = True) -> tuple[Array, Array, Array]:
    mean, logvar = self.encode(x)
    z = mean
    if sample_posterior:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("latent"), mean.shape)
    return self.decode(z), mean, logvar


def latent_shape(model: AutoencoderKL, image_size: int) -> tuple[int, int, int]:
  """(height, width, channels) of the latent of a square image of ``image_size`` pixels."""
  f = model.downsample_factor
  if image_size % f:
    raise ConfigError(
      f"image size {image_size} is not divisible by the autoencoder's downsampling factor {f} "
      f"({len(model.block_out_channels)} levels)"
    )
  return image_size // f, image_size // f, model.latent_channels


def _channel_stats(model: AutoencoderKL) -> tuple[Array, Array] | None:
  if model.latents_mean is None or model.latents_std is None:
    return None
  return jnp.asarray(model.latents_mean, jnp.float32), jnp.asarray(model.latents_std, jnp.float32)


def normalize_latents(model: AutoencoderKL, z: Array) -> Array:
  """Raw latents -> the space diffusion trains in: ``(z - shift) * scaling``, or with per-channel
  statistics ``(z - latents_mean) * scaling / latents_std`` (diffusers' pipelines' convention)."""
  stats = _channel_stats(model)
  if stats is not None:
    return (z - stats[0]) * model.scaling_factor / stats[1]
  return (z - (model.shift_factor or 0.0)) * model.scaling_factor


def denormalize_latents(model: AutoencoderKL, z: Array) -> Array:
  """The inverse of ``normalize_latents``: what ``decode`` takes."""
  stats = _channel_stats(model)
  if stats is not None:
    return z * stats[1] / model.scaling_factor + stats[0]
  return z / model.scaling_factor + (model.shift_factor or 0.0)


def _chunked(fn, x: Array, chunk: int):
  """fn over the leading axis of x, ``chunk`` rows at a time in one ``lax.map`` (the last chunk padded
  with zeros; every op of the family is per-example, so padding changes no other row)."""
  n = x.shape[0]
  if chunk <= 0 or n <= chunk:
    return fn(x)
  steps = -(-n // chunk)
  x = jnp.concatenate([x, jnp.zeros((steps * chunk - n, *x.shape[1:]), x.dtype)]) if steps * chunk > n else x
  out = jax.lax.map(fn, x.reshape(steps, chunk, *x.shape[1:]))
  return jax.tree_util.tree_map(lambda a: a.reshape(steps * chunk, *a.shape[2:])[:n], out)


def encode_images(model: AutoencoderKL, variables: Any, x: Array, batch_size: int = 0) -> tuple[Array, Array]:
  """(mean, logvar) of a batch of images, ``batch_size`` images at a time (0: all at once); jit it."""
  return _chunked(lambda v: model.apply(variables, v, method=model.encode), jnp.asarray(x), batch_size)


def decode_latents(model: AutoencoderKL, variables: Any, z: Array, batch_size: int = 0) -> Array:
  """Decoded images of a batch of raw latents, ``batch_size`` at a time (0: all at once), so the peak
  memory is one chunk's; jit it. Pass ``denormalize_latents(model, z)`` for a diffusion model's output."""
  return _chunked(lambda v: model.apply(variables, v, method=model.decode), jnp.asarray(z), batch_size)


def config_fields(model: AutoencoderKL) -> dict:
  """The module's hyperparameters as plain JSON values (tuples as lists, dtypes as names)."""
  out = {}
  for name in (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "mid_block_add_attention",
    "use_quant_conv",
    "use_post_quant_conv",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "sample_size",
  ):
    value = getattr(model, name)
    out[name] = list(value) if isinstance(value, (tuple, list)) else value
  out["dtype"] = np.dtype(model.dtype).name
  return out
