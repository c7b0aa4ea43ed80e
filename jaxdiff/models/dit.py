"""The diffusion transformer (DiT, Peebles & Xie 2023), Flax linen, NHWC.

The reference architecture (facebookresearch/DiT ``models.py``): the image is cut into
``patch_size`` x ``patch_size`` patches by a strided convolution, a fixed 2-D sin-cos position
table is added, and ``depth`` adaLN-Zero transformer blocks read a conditioning vector ``c`` =
time embedding (a 256-wide sinusoid through a two-layer MLP) + class embedding (the label
``num_classes`` is the null class of classifier-free guidance, as in the UNet). Every block
regresses shift, scale and gate for its attention and MLP branches from ``c`` through a
zero-initialised linear layer, so each block starts as the identity; a final adaLN layer
(zero-initialised) maps the tokens to patches and ``unpatchify`` reassembles the image. With
``learn_sigma`` the output has twice the input channels. Parameters and the parameter count
match the reference (``DiT.param_count``: DiT-XL/2 on 32x32x4 latents, 1000 classes and learned
sigma has 675,129,632 counted as the reference counts them, its fixed position table included).

Beyond the reference, as the UNet offers them: any process time (``time_input``), bf16 compute
with float32 parameters (``dtype`` / ``param_dtype``), ``remat`` per block, attention through
``jax.nn.dot_product_attention`` (``attention_impl``), optional cross-attention to a context
after each self-attention (``context_dim``), self-conditioning and a conditioning image.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.conditioning import Conditioning
from jaxdiff.errors import ArgumentError, ConfigError
from jaxdiff.models.attention import ContextWithNull, MultiHeadAttention, dot_product_attention
from jaxdiff.models.layers import (
  FIXED_TIME_EMBEDDINGS,
  FOURIER_SCALE,
  broadcast_timesteps,
  check_time_embedding,
  gap_time_input,
  resolve_labels,
  time_features,
  time_gap,
  with_image_condition,
  with_self_condition,
  zeros_init,
)

__all__ = [
  "DiT",
  "DiTBlock",
  "DIT_SIZES",
  "DIT_PATCH_SIZES",
  "DIT_VARIANTS",
  "dit_variant",
  "pos_embed_2d",
  "patchify",
  "unpatchify",
]

Array = jax.Array

# The model sizes of the DiT paper (Table 1): name -> (hidden_size, depth, num_heads); each comes
# with patch sizes 2, 4 and 8, named "S/2" ... "XL/8".
DIT_SIZES: dict[str, tuple[int, int, int]] = {
  "S": (384, 12, 6),
  "B": (768, 12, 12),
  "L": (1024, 24, 16),
  "XL": (1152, 28, 16),
}
DIT_PATCH_SIZES = (2, 4, 8)
DIT_VARIANTS = tuple(f"{size}/{p}" for size in DIT_SIZES for p in DIT_PATCH_SIZES)
FREQUENCY_DIM = 256  # width of the fixed time embedding fed to the time MLP (the reference's)


def dit_variant(name: str, where: str = "DiT.") -> dict[str, int]:
  """The fields of a named variant, e.g. ``"XL/2"`` -> ``{"hidden_size": 1152, "depth": 28,
  "num_heads": 16, "patch_size": 2}``; ConfigError naming ``{where}dit_variant`` otherwise
  (``where``: how the caller's user names the fields, e.g. ``"config.model."``)."""
  size, _, patch = str(name).partition("/")
  if size not in DIT_SIZES or not patch.isdigit() or int(patch) not in DIT_PATCH_SIZES:
    raise ConfigError(
      f"{where}dit_variant must be one of {DIT_VARIANTS} (or '' for the fields), got {name!r}"
    )
  hidden, depth, heads = DIT_SIZES[size]
  return {"hidden_size": hidden, "depth": depth, "num_heads": heads, "patch_size": int(patch)}


# Initialisers of the reference: xavier-uniform for every linear map and for the patch projection
# (its kernel seen as a [p * p * in, hidden] matrix, as torch's weight.view(out, -1)), zero biases,
# N(0, 0.02) for the time MLP and the class table.
def xavier_uniform_flat(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
  """Xavier-uniform with fan_in = the product of all but the last axis, fan_out = the last."""
  fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


_normal_002 = nn.initializers.normal(0.02)


@functools.cache
def _pos_embed_np(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  if dim % 4:
    raise ConfigError(f"the 2-D sin-cos position table needs a width divisible by 4 (hidden_size), got {dim}")
  quarter = dim // 4
  omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)

  def one_axis(pos: np.ndarray) -> np.ndarray:  # [N] -> [N, dim / 2]: sin then cos
    angles = pos[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  rows, cols = np.meshgrid(
    np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij"
  )
  # the reference puts the column (x) coordinate in the first half, the row (y) in the second
  table = np.concatenate([one_axis(cols.reshape(-1)), one_axis(rows.reshape(-1))], axis=1)
  table = table.astype(np.float32)
  table.flags.writeable = False
  return table


def pos_embed_2d(dim: int, grid_h: int, grid_w: int | None = None) -> np.ndarray:
  """The fixed 2-D sin-cos position table ``[grid_h * grid_w, dim]`` float32 (MAE / DiT), tokens
  in row-major order: the first ``dim / 2`` columns embed a token's column index, the last its row
  index, each as ``sin(pos w_k)`` then ``cos(pos w_k)`` with ``w_k = 10000^(-k / (dim / 4))``.
  A constant, not a parameter (cached, read-only)."""
  return _pos_embed_np(int(dim), int(grid_h), int(grid_h if grid_w is None else grid_w))


def patchify(x: Array, p: int) -> Array:
  """``[B, H, W, C] -> [B, (H / p) (W / p), p p C]``, patches in row-major order, each flattened
  as (row in patch, column in patch, channel) (the reference's and diffusers' layout)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Array, p: int, grid_h: int, grid_w: int) -> Array:
  """Inverse of ``patchify``: ``[B, grid_h grid_w, p p C] -> [B, grid_h p, grid_w p, C]``."""
  b, _, d = tokens.shape
  c = d // (p * p)
  x = tokens.reshape(b, grid_h, grid_w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, grid_h * p, grid_w * p, c)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  """adaLN: ``x (1 + scale) + shift`` with per-example ``[B, D]`` shift and scale."""
  return x * (1 + scale[:, None, :]) + shift[:, None, :]


class SelfAttention(nn.Module):
  """Multi-head self-attention with biases (the reference's timm ``Attention``), separate
  query / key / value projections (diffusers' layout), xavier-initialised, computed by
  ``jax.nn.dot_product_attention`` (``implementation`` as ``attention.dot_product_attention``)."""

  hidden_size: int
  num_heads: int
  implementation: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, n, d = x.shape
    heads = self.num_heads
    dense = lambda name: nn.Dense(
      d, kernel_init=xavier_uniform_flat, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    # xavier over the reference's fused [d, 3d] qkv matrix = variance 1 / (2d) per separate [d, d] block
    qkv_init = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")
    q, k, v = (
      nn.Dense(d, kernel_init=qkv_init, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x).reshape(
        b, n, heads, d // heads
      )
      for name in ("query", "key", "value")
    )
    out = dot_product_attention(q, k, v, None, self.implementation).reshape(b, n, d)
    return dense("out")(out)


class Mlp(nn.Module):
  """``Dense(hidden * mlp_ratio) -> GELU (tanh) -> Dense(hidden)``, xavier-initialised."""

  hidden_size: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(kernel_init=xavier_uniform_flat, dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.Dense(int(self.hidden_size * self.mlp_ratio), name="fc1", **kw)(x)
    return nn.Dense(self.hidden_size, name="fc2", **kw)(nn.gelu(h, approximate=True))


class DiTBlock(nn.Module):
  """adaLN-Zero transformer block: ``(shift, scale, gate) x 2 = Dense(silu(c))`` (zero-initialised)
  and ``x += gate_msa * attn(modulate(LN(x)))``, ``x += gate_mlp * mlp(modulate(LN(x)))`` with
  parameter-free LayerNorms (eps 1e-6). With a ``context`` (``[B, S, D]`` tokens and their mask),
  cross-attention (affine LayerNorm, zero-initialised output) is added after the self-attention.

  ``__call__(x, c, context, context_mask) -> x`` keeps the residual stream as its only carry, so
  the blocks can be remat-ed or scanned as they are."""

  hidden_size: int
  num_heads: int
  mlp_ratio: float = 4.0
  attention_impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, x: Array, c: Array, context: Array | None = None, context_mask: Array | None = None
  ) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, name=name, **kw)
    mod = nn.Dense(6 * self.hidden_size, kernel_init=zeros_init, name="adaLN_modulation", **kw)(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
    h = SelfAttention(self.hidden_size, self.num_heads, self.attention_impl, name="attn", **kw)(
      modulate(ln("norm1")(x), shift_msa, scale_msa)
    )
    x = x + gate_msa[:, None, :] * h
    if context is not None:
      x = x + MultiHeadAttention(
        self.hidden_size, self.num_heads, implementation=self.attention_impl, name="cross_attn", **kw
      )(nn.LayerNorm(epsilon=1e-6, name="norm_cross", **kw)(x), context, context_mask)
    h = Mlp(self.hidden_size, self.mlp_ratio, name="mlp", **kw)(
      modulate(ln("norm2")(x), shift_mlp, scale_mlp)
    )
    return x + gate_mlp[:, None, :] * h


class FinalLayer(nn.Module):
  """``Dense(modulate(LN(x), shift, scale))`` to ``p * p * out`` values per token; the modulation
  and the output projection start at zero, so the network's output does too."""

  hidden_size: int
  patch_size: int
  out_channels: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, c: Array) -> Array:
    kw = dict(kernel_init=zeros_init, dtype=self.dtype, param_dtype=self.param_dtype)
    shift, scale = jnp.split(
      nn.Dense(2 * self.hidden_size, name="adaLN_modulation", **kw)(nn.silu(c)), 2, axis=-1
    )
    x = nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, dtype=self.dtype, name="norm_final")(x)
    return nn.Dense(self.patch_size**2 * self.out_channels, name="linear", **kw)(modulate(x, shift, scale))


def size_problem(patch_size: Any, hidden_size: Any, depth: Any, num_heads: Any, mlp_ratio: Any) -> str | None:
  """What is wrong with a DiT's sizes, as a message whose field names start with ``{where}`` (the
  caller fills in how its user names them), or None when they build a network."""
  sizes = {"patch_size": patch_size, "hidden_size": hidden_size, "depth": depth, "num_heads": num_heads}
  for field, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      return f"{{where}}{field} must be a positive integer, got {value!r}"
  if hidden_size % num_heads:
    return f"{{where}}hidden_size={hidden_size} is not divisible by {{where}}num_heads={num_heads}"
  if hidden_size % 4:
    return f"{{where}}hidden_size={hidden_size} must be divisible by 4 (the 2-D sin-cos position table)"
  if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
    return f"{{where}}mlp_ratio must be a positive number, got {mlp_ratio!r}"
  if int(hidden_size * mlp_ratio) < 1:
    return f"{{where}}mlp_ratio={mlp_ratio} leaves the MLP no hidden unit (hidden_size * mlp_ratio < 1)"
  return None


class DiT(nn.Module):
  """Diffusion transformer: ``apply(variables, x, t, y=None, *, context=None, context_mask=None,
  x_cond=None, x_self_cond=None, train=False)``, the UNet's signature.

  ``x`` is ``[B, H, W, C]`` with H and W divisible by ``patch_size``, ``t`` the process time
  ``[B]`` (read as ``time_input`` says: ``"index"`` timesteps, ``"unit"`` t in [0, 1] as 1000 t,
  ``"log_sigma"`` EDM's sigma), ``y`` int32 labels ``[B]`` (``None``, or the label
  ``num_classes``, is the null class). Returns float32 ``[B, H, W, out]``, ``out =
  out_channels`` (default ``C``), doubled when ``learn_sigma``; exactly zero at initialisation.

  Sizes: ``hidden_size`` (divisible by ``num_heads`` and by 4), ``depth`` blocks, ``mlp_ratio``;
  ``DiT.from_variant("XL/2", ...)`` builds the paper's variants (``DIT_VARIANTS``). The time
  embedding is the UNet's fixed embedding (``layers.time_features``: DDPM's sinusoid, or
  ``time_embedding="fourier"``) at width 256 with the cosines first, as diffusers'
  ``DiTTransformer2DModel`` has it, followed by ``Dense, SiLU, Dense``. The fixed position table
  (``pos_embed_2d``) is a constant, not a variable: ``param_count`` adds it as the reference counts.
  Conditioning beyond labels as in the UNet: ``context_dim > 0`` adds cross-attention to the
  context (``attention.ContextWithNull``: float ``[B, L, context_dim]`` or, with ``context_vocab``,
  int tokens) in every block; ``self_condition`` / ``cond_channels`` concatenate ``x_self_cond``
  / ``x_cond`` to the input channels before patchifying. ``second_time``: a two-time network
  (one-step models, MeanFlow's DiT), called with ``r=`` (the time the step lands on); ``t - r``
  gets its own embedding added to the time's (``r=None``: ``r = t``).
  """

  patch_size: int
  hidden_size: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  num_classes: int = 0
  learn_sigma: bool = False
  in_channels: int = -1  # > 0: checked against the input's channels
  out_channels: int = -1  # -1: the input's channels
  self_condition: bool = False
  cond_channels: int = 0  # > 0: x_cond images concatenated to the input
  context_dim: int = 0  # > 0: cross-attention to a context of this width in every block
  context_vocab: int = 0  # > 0: the context is int tokens embedded by a learned table
  context_null: str = "learned"  # the null context: "learned" tokens or "zeros"
  context_null_length: int = 1
  attention_impl: str = "auto"  # "auto" | "xla" | "cudnn" (attention.dot_product_attention)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False  # jax.checkpoint each block
  time_input: str = "index"  # layers.TIME_INPUTS
  time_embedding: str = "sinusoidal"  # layers.FIXED_TIME_EMBEDDINGS
  fourier_scale: float = FOURIER_SCALE
  second_time: bool = False  # a two-time network: also embeds t - r (one-step models, `r=`)

  def __post_init__(self) -> None:
    check_time_embedding(self.time_input, self.time_embedding, FIXED_TIME_EMBEDDINGS)
    self.check_sizes()
    super().__post_init__()

  @classmethod
  def from_variant(cls, variant: str, **kwargs: Any) -> DiT:
    """The named variant (``"S/2"`` ... ``"XL/8"``, ``DIT_VARIANTS``) with the other fields given."""
    return cls(**dit_variant(variant), **kwargs)

  def check_sizes(self, where: str = "DiT.") -> None:
    """ConfigError naming the first size field that cannot build a network; ``where`` is how the
    caller's user names the fields (``"DiT."`` for the module, ``"config.model."`` for a config)."""
    problem = size_problem(self.patch_size, self.hidden_size, self.depth, self.num_heads, self.mlp_ratio)
    if problem:
      raise ConfigError(problem.replace("{where}", where))

  def _check(self, x: Array) -> None:
    if x.ndim != 4:
      raise ConfigError(f"DiT expects NHWC images [B, H, W, C], got shape {x.shape}")
    if self.in_channels > 0 and x.shape[-1] != self.in_channels:
      raise ConfigError(
        f"DiT.in_channels={self.in_channels} but the input has {x.shape[-1]} channels (shape {x.shape})"
      )
    p = self.patch_size
    if x.shape[1] % p or x.shape[2] % p:
      raise ConfigError(
        f"DiT.patch_size={p} does not divide the input's image size {x.shape[1]}x{x.shape[2]}"
      )

  def pos_embed_size(self, image_size: int | tuple[int, int]) -> int:
    """Entries of the fixed position table for ``image_size`` (int: square, or (H, W))."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (h // self.patch_size) * (w // self.patch_size) * self.hidden_size

  def param_count(
    self, image_size: int | tuple[int, int], channels: int | None = None, *, include_pos_embed: bool = True
  ) -> int:
    """Parameters counted as the reference counts them: the trainable ones plus the fixed position
    table (a registered, non-trainable parameter there; a constant here); only the trainable ones
    with ``include_pos_embed=False``. Shapes come from ``jax.eval_shape``: nothing is allocated,
    so XL/2 is counted in milliseconds. ``channels`` defaults to ``in_channels``."""
    channels = self.in_channels if channels is None else channels
    if channels is None or channels < 1:
      raise ArgumentError("DiT.param_count needs the input channels (channels=, or the model's in_channels)")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    cond = Conditioning(
      num_classes=self.num_classes,
      self_condition=self.self_condition,
      context_dim=self.context_dim,
      context_vocab=self.context_vocab,
      cond_channels=self.cond_channels,
    )

    def init() -> Any:
      x = jnp.zeros((1, h, w, channels), jnp.float32)
      return self.init(jax.random.key(0), x, jnp.zeros((1,), jnp.float32), **cond.dummy_kwargs(x))["params"]

    shapes = jax.eval_shape(init)
    trainable = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    return trainable + (self.pos_embed_size((h, w)) if include_pos_embed else 0)

  @nn.compact
  def __call__(
    self,
    x: Array,
    t: Array,
    y: Array | None = None,
    *,
    context: Array | None = None,
    context_mask: Array | None = None,
    x_cond: Array | None = None,
    x_self_cond: Array | None = None,
    r: Array | None = None,
    train: bool = False,
  ) -> Array:
    del train  # no dropout in DiT (label dropout happens in the data: jaxdiff.conditioning)
    x = jnp.asarray(x)
    self._check(x)
    batch, height, width, channels = x.shape
    p, d = self.patch_size, self.hidden_size
    out_channels = (self.out_channels if self.out_channels > 0 else channels) * (2 if self.learn_sigma else 1)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    # Conditioning vector c = time embedding + class embedding (null class = num_classes).
    freq = time_features(
      broadcast_timesteps(t, batch), FREQUENCY_DIM, self.time_input, self.time_embedding, self.fourier_scale
    )
    freq = jnp.concatenate(
      [freq[:, FREQUENCY_DIM // 2 :], freq[:, : FREQUENCY_DIM // 2]], axis=-1
    )  # cos first
    t_dense = lambda name: nn.Dense(d, kernel_init=_normal_002, name=name, **kw)
    c = t_dense("time_embed_1")(nn.silu(t_dense("time_embed_0")(freq)))
    gap = time_gap(broadcast_timesteps(t, batch), r, batch, self.second_time)
    if gap is not None:  # a two-time network: the interval t - r, embedded like the time
      gfreq = time_features(
        gap, FREQUENCY_DIM, gap_time_input(self.time_input), self.time_embedding, self.fourier_scale
      )
      gfreq = jnp.concatenate([gfreq[:, FREQUENCY_DIM // 2 :], gfreq[:, : FREQUENCY_DIM // 2]], axis=-1)
      c = c + t_dense("second_time_embed_1")(nn.silu(t_dense("second_time_embed_0")(gfreq)))
    labels = resolve_labels(y, batch, self.num_classes)
    if labels is not None:
      c = c + nn.Embed(self.num_classes + 1, d, embedding_init=_normal_002, name="label_embed", **kw)(labels)
    ctx, ctx_mask = None, None
    if self.context_dim > 0:
      ctx, ctx_mask = ContextWithNull(
        self.context_dim,
        self.context_vocab,
        self.context_null,
        self.context_null_length,
        name="context",
        **kw,
      )(context, context_mask, batch)
    elif context is not None or context_mask is not None:
      raise ConfigError("a context was given but the network has no cross-attention (model.context_dim = 0)")

    # Patchify (a p x p conv with stride p) and add the fixed position table.
    h = with_self_condition(x, x_self_cond, self.self_condition)
    h = with_image_condition(h, x_cond, self.cond_channels).astype(self.dtype)
    h = nn.Conv(
      d, (p, p), strides=(p, p), padding="VALID", kernel_init=xavier_uniform_flat, name="patch_embed", **kw
    )(h)
    grid_h, grid_w = height // p, width // p
    h = h.reshape(batch, grid_h * grid_w, d) + jnp.asarray(pos_embed_2d(d, grid_h, grid_w), self.dtype)[None]

    block_cls = nn.remat(DiTBlock) if self.remat else DiTBlock
    for i in range(self.depth):
      h = block_cls(d, self.num_heads, self.mlp_ratio, self.attention_impl, name=f"blocks_{i}", **kw)(
        h, c, ctx, ctx_mask
      )
    h = FinalLayer(d, p, out_channels, name="final_layer", **kw)(h, c)
    return unpatchify(h, p, grid_h, grid_w).astype(jnp.float32)
