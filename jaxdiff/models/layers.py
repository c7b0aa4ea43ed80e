"""Building blocks shared by the networks: time embeddings, GroupNorm, residual blocks,
resampling and attention (Flax linen, NHWC).

Every module takes a compute ``dtype`` (e.g. bfloat16) separate from ``param_dtype`` (kept
float32 so that optimizer updates and EMA stay exact); normalisation statistics are always
reduced in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ArgumentError, ConfigError

Dtype = Any
Array = jax.Array

# Output layers of residual branches start at zero (DDPM `init_scale=0.`, ADM `zero_module`):
# every block is the identity at initialisation, which keeps deep UNets trainable.
zeros_init = nn.initializers.zeros


def timestep_embedding(
  t: Array, dim: int, max_period: float = 10000.0, *, flip_sin_to_cos: bool = False, freq_shift: float = 1.0
) -> Array:
  """Sinusoidal embedding of (possibly fractional) timesteps, ``[B] -> [B, dim]`` float32.

  The Fairseq/tensor2tensor variant used by DDPM, ADM and the JAX anchors: with
  ``half = dim // 2`` the frequencies are ``exp(-log(max_period) * i / (half - freq_shift))``
  for ``i = 0..half-1`` (``freq_shift=1``: DDPM); the output is ``sin(t * f)`` then
  ``cos(t * f)`` (cos first with ``flip_sin_to_cos``, diffusers' ``Timesteps`` options),
  zero-padded by one column when ``dim`` is odd. Pure: it jits, vmaps and differentiates.
  """
  if dim < 4:
    raise ArgumentError(f"timestep_embedding needs dim >= 4 (two frequencies), got {dim}")
  t = jnp.asarray(t, jnp.float32)
  if t.ndim != 1:
    raise ArgumentError(f"timestep_embedding expects t of shape [batch], got {t.shape}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  args = t[:, None] * freqs[None, :]
  parts = [jnp.cos(args), jnp.sin(args)] if flip_sin_to_cos else [jnp.sin(args), jnp.cos(args)]
  emb = jnp.concatenate(parts, axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


# ---------------------------------------------------------------- time inputs and embeddings
#
# The process time reaches the network in the process's own units (docs/noise_core.md): the
# discrete VP chain's timestep in [0, T), t in [0, 1] for VP-SDEs and flows, sigma for EDM.
# ``time_input`` says which, and so how it becomes the embedding's input; ``time_embedding``
# which embedding reads it. Config validation imports these tuples.

TIME_INPUTS = ("index", "unit", "log_sigma", "c_noise")
TIME_EMBEDDINGS = ("sinusoidal", "learned", "fourier")
FIXED_TIME_EMBEDDINGS = ("sinusoidal", "fourier")  # TimeEmbedding's (and the UNet's): no learned table
UNIT_SCALE = 1000.0  # "unit": t in [0, 1] -> 1000 t (DiT, SD3, flow matching, score_sde's continuous VP)
FOURIER_SCALE = 16.0  # std of the Gaussian Fourier frequencies (NCSN++ / EDM `FourierEmbedding`)
FOURIER_SEED = 0  # the fixed seed of those frequencies (NumPy's frozen legacy RandomState stream)
# "log_sigma": sigma is floored here before the log, so sigma = 0 (e.g. the zero dummy inputs that
# initialise a network) embeds finitely; the EDM range [0.002, 80] is far above it.
SIGMA_FLOOR = float(jnp.finfo(jnp.float32).tiny)


def check_time_embedding(
  time_input: str, time_embedding: str, embeddings: tuple[str, ...] = TIME_EMBEDDINGS
) -> None:
  """ValueError naming the field when ``model.time_input`` / ``model.time_embedding`` is unknown,
  not one of ``embeddings`` (the ones a network offers), or the pair does not go together (a
  learned table is indexed by integer timesteps, so it needs ``time_input="index"``)."""
  if time_input not in TIME_INPUTS:
    raise ConfigError(f"model.time_input must be one of {TIME_INPUTS}, got {time_input!r}")
  if time_embedding not in embeddings:
    raise ConfigError(f"model.time_embedding must be one of {embeddings}, got {time_embedding!r}")
  if time_embedding == "learned" and time_input != "index":
    raise ConfigError(
      f"model.time_embedding='learned' is a table over integer timesteps and needs model.time_input='index', "
      f"got model.time_input={time_input!r}; continuous time takes 'sinusoidal' or 'fourier'"
    )


@functools.cache
def _fourier_frequencies(half: int, scale: float) -> np.ndarray:
  z = np.random.RandomState(FOURIER_SEED).standard_normal(half)  # float64, a frozen stream (NEP 19)
  return (2 * math.pi * scale * z).astype(np.float32)


def fourier_embedding(x: Array, dim: int, scale: float = FOURIER_SCALE) -> Array:
  """Gaussian random Fourier features (Tancik et al. 2020; NCSN++, EDM), ``[B] -> [B, dim]`` float32.

  ``sin(2 pi w x)`` then ``cos(2 pi w x)`` for ``dim // 2`` frequencies ``w ~ N(0, scale^2)``,
  zero-padded by one column when ``dim`` is odd. The frequencies are fixed, not trained, and
  are no variable: they are drawn from NumPy's legacy ``RandomState(FOURIER_SEED)``, whose
  stream NumPy keeps frozen (NEP 19), so they are the same on every machine and version and
  a checkpoint needs nothing beyond its parameters. (JAX's own random bits changed in 0.5.)
  """
  if dim < 2:
    raise ArgumentError(f"fourier_embedding needs dim >= 2 (one frequency), got {dim}")
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 1:
    raise ArgumentError(f"fourier_embedding expects x of shape [batch], got {x.shape}")
  args = x[:, None] * jnp.asarray(_fourier_frequencies(dim // 2, float(scale)))[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def time_features(
  t: Array,
  dim: int,
  time_input: str = "index",
  time_embedding: str = "sinusoidal",
  fourier_scale: float = FOURIER_SCALE,
  *,
  flip_sin_to_cos: bool = False,
  freq_shift: float = 1.0,
) -> Array:
  """The fixed (parameter-free) embedding of the process time ``t`` ``[B]``: ``[B, dim]`` float32.

  ``time_embedding="sinusoidal"`` (``timestep_embedding``, frequencies 1 down to 1e-4 rad per
  unit of its input) reads

  - ``"index"``: the timestep ``t`` itself, exactly as before this option existed (DDPM);
  - ``"unit"``: ``1000 t`` for ``t`` in [0, 1] (DiT, SD3, flow matching; score_sde's continuous
    VP with the DDPM embedding), so t = i / 1000 embeds as timestep i;
  - ``"log_sigma"``: ``1000 c_noise`` with EDM's ``c_noise = ln(sigma) / 4`` (Karras et al. 2022,
    Table 1). The factor 1000 is ours, the convention of ``"unit"``: c_noise spans only 2.65 over
    sigma in [0.002, 80], and EDM's DDPM++ feeds it unscaled to a positional embedding whose top
    frequency is 1 rad, where a 10% change of sigma (0.024 in c_noise) moves no coordinate by
    more than 0.024, leaving the MLP to amplify it. Scaled by 1000 the range becomes ~2650
    "timesteps" (DDPM's embedding resolves 1000): the lowest frequencies still give a monotone
    coordinate over the whole range and the highest turn by ~24 rad between sigmas 10% apart.
  - ``"c_noise"``: EDM's ``c_noise = ln(sigma) / 4`` unscaled, what diffusers' EDM schedulers feed
    a ``UNet2DModel`` (networks imported with ``EDMEulerScheduler`` / ``EDMDPMSolverMultistepScheduler``).

  ``time_embedding="fourier"`` (``fourier_embedding``, ``w ~ N(0, fourier_scale^2)``) reads an
  input of order one: ``t / 1000`` (``"index"``), ``t`` (``"unit"``), or ``c_noise`` itself
  (``"log_sigma"`` and ``"c_noise"``: exactly NCSN++'s embedding in EDM, scale 16, where a 10% change of sigma
  turns a typical frequency by ~2.4 rad).
  """
  check_time_embedding(time_input, time_embedding, FIXED_TIME_EMBEDDINGS)
  t = jnp.asarray(t, jnp.float32)
  if time_input in ("log_sigma", "c_noise"):
    t = jnp.log(jnp.maximum(t, SIGMA_FLOOR)) / 4  # EDM's c_noise
  if time_embedding == "sinusoidal":
    return timestep_embedding(
      t if time_input in ("index", "c_noise") else t * UNIT_SCALE,
      dim,
      flip_sin_to_cos=flip_sin_to_cos,
      freq_shift=freq_shift,
    )
  return fourier_embedding(t / UNIT_SCALE if time_input == "index" else t, dim, fourier_scale)


def num_groups_for(channels: int, max_groups: int) -> int:
  """Largest group count ``<= max_groups`` dividing ``channels`` (GroupNorm needs a divisor),
  so small widths (e.g. 24 channels with 32 groups -> 24) still work."""
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1


# True traces GroupNorm through `group_norm` (one float32 pass for the statistics, SiLU fused in, a
# hand-written gradient of one reduction pass); False, the default, through flax's nn.GroupNorm. Equal
# within float32 rounding (tests/test_models.py); the fused one was not faster in the UNet train step
# on the 2-core CPU (benchmarks/bench_unet_levers.py, BENCHMARKS.md), so it is not the default. Read at
# trace time; the library never sets it.
FUSED_GROUP_NORM = False


def _group_stats(xg: Array, epsilon: float) -> tuple[Array, Array]:
  """Mean and 1/std per (batch, group) of ``xg`` [B, S, G, Cg] in float32: the sum and the sum of
  squares in one pass (variance E[x^2] - E[x]^2, clipped at 0, as flax's fast variance)."""
  n = xg.shape[1] * xg.shape[3]
  total, squares = jnp.sum(xg, axis=(1, 3)), jnp.sum(xg * xg, axis=(1, 3))
  mean = total / n
  var = jnp.maximum(squares / n - mean * mean, 0.0)
  return mean, jax.lax.rsqrt(var + epsilon)


def _grouped(x: Array, groups: int) -> Array:
  b, c = x.shape[0], x.shape[-1]
  return x.astype(jnp.float32).reshape(b, -1, groups, c // groups)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def group_norm(x: Array, scale: Array, bias: Array, groups: int, epsilon: float, silu: bool) -> Array:
  """GroupNorm of the channels-last ``x`` with per-channel ``scale``/``bias``, then SiLU when ``silu``:
  float32 statistics in one pass, and a hand-written derivative whose transpose (the gradient) is one
  reduction pass (memory-bound work XLA leaves as several passes when it differentiates the textbook
  formula). A custom JVP rather than a custom VJP, so forward-mode (`jax.jvp`, the MeanFlow target)
  works as well as gradients. Output in ``x``'s dtype."""
  xg = _grouped(x, groups)
  mean, rstd = _group_stats(xg, epsilon)
  _, z = _affine(xg, mean, rstd, scale, bias)
  y = nn.silu(z) if silu else z
  return y.reshape(x.shape).astype(x.dtype)


def _affine(xg: Array, mean: Array, rstd: Array, scale: Array, bias: Array) -> tuple[Array, Array]:
  g, cg = xg.shape[2], xg.shape[3]
  xhat = (xg - mean[:, None, :, None]) * rstd[:, None, :, None]
  z = xhat * scale.astype(jnp.float32).reshape(g, cg) + bias.astype(jnp.float32).reshape(g, cg)
  return xhat, z


@group_norm.defjvp
def _group_norm_jvp(groups, epsilon, silu, primals, tangents):
  x, scale, bias = primals
  dx, dscale, dbias = tangents
  xg = _grouped(x, groups)
  g, cg = xg.shape[2], xg.shape[3]
  mean, rstd = _group_stats(xg, epsilon)
  xhat, z = _affine(xg, mean, rstd, scale, bias)
  y = nn.silu(z) if silu else z
  # d xhat = rstd (dx - E_group[dx] - xhat E_group[dx xhat]): linear in the tangents, so its
  # transpose (the gradient) is two per-group sums of the cotangent, one pass
  dxg = _grouped(dx, groups)
  m1 = jnp.mean(dxg, axis=(1, 3))
  m2 = jnp.mean(dxg * xhat, axis=(1, 3))
  dxhat = rstd[:, None, :, None] * (dxg - m1[:, None, :, None] - xhat * m2[:, None, :, None])
  gamma = scale.astype(jnp.float32).reshape(g, cg)
  dz = (
    dxhat * gamma
    + xhat * dscale.astype(jnp.float32).reshape(g, cg)
    + dbias.astype(jnp.float32).reshape(g, cg)
  )
  if silu:
    sig = jax.nn.sigmoid(z)
    dz = dz * (sig * (1 + z * (1 - sig)))
  return y.reshape(x.shape).astype(x.dtype), dz.reshape(x.shape).astype(x.dtype)


class _GroupNormParams(nn.Module):
  """The scale and bias of a GroupNorm, at the parameter paths of flax's nn.GroupNorm."""

  groups: int
  epsilon: float
  silu: bool
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    out_dtype = x.dtype if self.dtype is None else self.dtype
    return group_norm(x, scale, bias, self.groups, self.epsilon, self.silu).astype(out_dtype)


class GroupNorm(nn.Module):
  """GroupNorm with the group count reduced to divide the channels; statistics in float32.
  ``silu=True`` applies SiLU to the output inside the same fused computation."""

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  silu: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    groups = num_groups_for(x.shape[-1], self.num_groups)
    if FUSED_GROUP_NORM:
      return _GroupNormParams(groups, self.epsilon, self.silu, self.dtype, self.param_dtype, name="norm")(x)
    y = nn.GroupNorm(
      num_groups=groups, epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
    )(x)
    return nn.silu(y) if self.silu else y


class TimeEmbedding(nn.Module):
  """Fixed embedding of the process time ``t`` followed by a two-layer MLP (Dense, SiLU, Dense).

  ``sinusoidal_dim`` is the width of the fixed embedding (DDPM: base channels), ``features``
  the width of the MLP and of the embedding every block receives (DDPM: 4 x base channels).
  ``time_input`` ("index" | "unit" | "log_sigma") and ``time_embedding`` ("sinusoidal" |
  "fourier") choose the fixed embedding (``time_features``); the defaults are DDPM's sinusoid of
  the timestep. Every choice has the same parameters (``dense_0``, ``dense_1``).
  ``flip_sin_to_cos`` / ``freq_shift`` are the sinusoid's layout options (``timestep_embedding``).
  """

  sinusoidal_dim: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  time_input: str = "index"
  time_embedding: str = "sinusoidal"
  fourier_scale: float = FOURIER_SCALE
  flip_sin_to_cos: bool = False
  freq_shift: float = 1.0

  def __post_init__(self) -> None:
    check_time_embedding(self.time_input, self.time_embedding, FIXED_TIME_EMBEDDINGS)
    super().__post_init__()

  @nn.compact
  def __call__(self, t: Array) -> Array:
    emb = time_features(
      t,
      self.sinusoidal_dim,
      self.time_input,
      self.time_embedding,
      self.fourier_scale,
      flip_sin_to_cos=self.flip_sin_to_cos,
      freq_shift=self.freq_shift,
    )
    emb = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="dense_0")(emb)
    emb = nn.silu(emb)
    return nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="dense_1")(emb)


def upsample_nearest(x: Array) -> Array:
  """Nearest-neighbour 2x upsampling of NHWC maps by broadcasting (one fused copy)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def avg_pool2(x: Array) -> Array:
  """2x2 average pooling with stride 2 (the conv-free downsampling)."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def conv3x3(
  features: int,
  dtype: Dtype,
  param_dtype: Dtype,
  name: str,
  *,
  strides: int = 1,
  kernel_init: Any = nn.initializers.lecun_normal(),
  padding: Any = ((1, 1), (1, 1)),
) -> nn.Conv:
  """3x3 convolution with symmetric padding 1 (so stride 2 halves even sizes exactly)."""
  return nn.Conv(
    features,
    (3, 3),
    strides=(strides, strides),
    padding=padding,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=kernel_init,
    name=name,
  )


class Downsample(nn.Module):
  """Halve the resolution: strided 3x3 conv (DDPM) or 2x2 average pooling.

  ``padding`` of the conv: 1 on every side, or 0: one row / column of zeros after the bottom and
  right edges only (the original DDPM TensorFlow code, diffusers' ``downsample_padding=0``).
  """

  channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  padding: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.use_conv:
      if self.padding not in (0, 1):
        raise ConfigError(f"model.downsample_padding must be 0 or 1, got {self.padding!r}")
      pad = ((1, 1), (1, 1)) if self.padding == 1 else ((0, 1), (0, 1))
      return conv3x3(self.channels, self.dtype, self.param_dtype, "conv", strides=2, padding=pad)(x)
    return avg_pool2(x)


class Upsample(nn.Module):
  """Double the resolution: nearest neighbour, then a 3x3 conv when ``use_conv`` (DDPM)."""

  channels: int
  use_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = upsample_nearest(x)
    if self.use_conv:
      x = conv3x3(self.channels, self.dtype, self.param_dtype, "conv")(x)
    return x


class ResBlock(nn.Module):
  """Residual block: GroupNorm, SiLU, 3x3 conv, time conditioning, GroupNorm, SiLU, dropout,
  3x3 conv (zero-initialised), plus a 1x1 projection of the input when channels change.

  Time conditioning (``emb`` is ``[B, E]``): added after the first conv (DDPM), or, with
  ``use_scale_shift_norm``, FiLM on the second norm, ``norm(h) * (1 + scale) + shift``
  (improved DDPM / ADM). ``resample="down"|"up"`` makes it a BigGAN-style resampling block
  (ADM's ``resblock_updown``): the input is resampled inside the block, after the first norm.
  ``epsilon`` is the GroupNorms' (diffusers' ``norm_eps``).
  """

  out_channels: int
  dropout: float = 0.0
  use_scale_shift_norm: bool = False
  resample: Literal["down", "up"] | None = None
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array, emb: Array, train: bool = False) -> Array:
    dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw)
    norm = lambda name, silu=False: GroupNorm(
      self.num_groups, self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, silu=silu, name=name
    )
    h = norm("norm_1", silu=True)(x)
    if self.resample == "down":
      h, x = avg_pool2(h), avg_pool2(x)
    elif self.resample == "up":
      h, x = upsample_nearest(h), upsample_nearest(x)
    elif self.resample is not None:
      raise ArgumentError(f"ResBlock.resample must be None, 'down' or 'up', got {self.resample!r}")
    h = conv3x3(self.out_channels, self.dtype, self.param_dtype, "conv_1")(h)

    width = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
    emb_out = dense(width, "emb_proj")(nn.silu(emb))[:, None, None, :]
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = norm("norm_2")(h) * (1 + scale) + shift
      h = nn.silu(h)
    else:
      h = norm("norm_2", silu=True)(h + emb_out)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv3x3(self.out_channels, self.dtype, self.param_dtype, "conv_2", kernel_init=zeros_init)(h)

    if x.shape[-1] != self.out_channels:
      x = dense(self.out_channels, "skip")(x)  # 1x1 "network in network" projection
    return x + h


def with_image_condition(h: Array, x_cond: Array | None, cond_channels: int) -> Array:
  """Concatenate the conditioning image ``x_cond`` ``[B, H, W, cond_channels]`` on the channel
  axis (SR3 / Palette): required when ``cond_channels > 0``, an error otherwise."""
  if cond_channels <= 0:
    if x_cond is not None:
      raise ConfigError(
        "x_cond was given but the network takes no conditioning image (model.cond_channels = 0)"
      )
    return h
  if x_cond is None:
    raise ConfigError(
      f"this network is conditioned on an image (model.cond_channels="
      f"{cond_channels}): pass x_cond of shape [batch, H, W, {cond_channels}]"
    )
  x_cond = jnp.asarray(x_cond)
  want = tuple(h.shape[:3]) + (cond_channels,)
  if tuple(x_cond.shape) != want:
    raise ArgumentError(f"x_cond must have shape {want}, got {x_cond.shape}")
  return jnp.concatenate([h, x_cond.astype(h.dtype)], axis=-1)


def broadcast_timesteps(t: Array, batch: int) -> Array:
  """Timesteps as float32 ``[batch]``: int or float input, scalar broadcast to the batch.
  Float values are kept (fractional timesteps are valid for the sinusoidal embedding)."""
  t = jnp.asarray(t)
  if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, batch)):
    raise ArgumentError(f"t must be a scalar or of shape [{batch}], got shape {t.shape}")
  return jnp.broadcast_to(t.astype(jnp.float32), (batch,))


def gap_time_input(time_input: str) -> str:
  """How a two-time network embeds the interval t - r: like t, but linearly where t is EDM's sigma
  (log sigma has no value at a zero interval)."""
  return "unit" if time_input in ("log_sigma", "c_noise") else time_input


def time_gap(t: Array, r: Array | None, batch: int, second_time: bool) -> Array | None:
  """``t - r`` as float32 ``[batch]`` for a two-time network (``second_time``): the interval a
  one-step model covers, landing on ``r``; ``r=None`` asks the instantaneous velocity (gap 0).
  None for a one-time network, which refuses an ``r``."""
  if not second_time:
    if r is not None:
      raise ConfigError(
        "r (the time a step lands on) was given to a one-time network; set model.second_time=True"
      )
    return None
  if r is None:
    return jnp.zeros((batch,), jnp.float32)
  return t - broadcast_timesteps(r, batch)


def resolve_labels(y: Array | None, batch: int, num_classes: int) -> Array | None:
  """Class labels as int32 ``[batch]``; ``None`` means the null class ``num_classes``
  (classifier-free guidance). Labels given to an unconditional network are an error."""
  if num_classes <= 0:
    if y is not None:
      raise ConfigError("labels y were given but the network is unconditional (model.num_classes = 0)")
    return None
  if y is None:
    return jnp.full((batch,), num_classes, jnp.int32)
  y = jnp.asarray(y)
  if y.shape != (batch,):
    raise ArgumentError(f"labels y must have shape [{batch}], got {y.shape}")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ArgumentError(f"labels y must be integers, got dtype {y.dtype}")
  return y.astype(jnp.int32)


def with_self_condition(x: Array, x_self_cond: Array | None, enabled: bool) -> Array:
  """Concatenate the self-conditioning input (zeros when absent) on the channel axis."""
  if not enabled:
    if x_self_cond is not None:
      raise ConfigError("x_self_cond was given but model.self_condition is False")
    return x
  if x_self_cond is None:
    x_self_cond = jnp.zeros_like(x)
  if x_self_cond.shape != x.shape:
    raise ArgumentError(f"x_self_cond must have the shape of x {x.shape}, got {x_self_cond.shape}")
  return jnp.concatenate([x, x_self_cond.astype(x.dtype)], axis=-1)
