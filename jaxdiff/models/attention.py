"""Attention for the networks: multi-head self-attention, its fused kernels, the UNet's attention
and linear-attention blocks, cross-attention (SpatialTransformer) and the context with its learned
null (Flax linen, NHWC; the compute dtype apart from float32 parameters, as in `layers`).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.errors import ArgumentError, ConfigError
from jaxdiff.models.layers import Array, Dtype, GroupNorm, zeros_init


def _heads(channels: int, num_heads: int, head_dim: int) -> tuple[int, int]:
  """(heads, channels per head): ``head_dim > 0`` wins over ``num_heads``."""
  if head_dim > 0:
    if channels % head_dim:
      raise ConfigError(f"model.head_dim={head_dim} does not divide {channels} channels")
    return channels // head_dim, head_dim
  if num_heads < 1 or channels % num_heads:
    raise ConfigError(f"model.num_heads={num_heads} does not divide {channels} channels")
  return num_heads, channels // num_heads


class MultiHeadAttention(nn.Module):
  """Multi-head attention over token sequences through ``jax.nn.dot_product_attention``.

  ``inputs_q`` is ``[B, L, C]``; keys and values come from ``inputs_kv`` (default: the
  queries, i.e. self-attention; a ``[B, S, D]`` context gives cross-attention with the same
  parameters layout). ``mask`` (bool ``[B, S]``, True = attend) leaves out padded keys; every
  row must keep at least one key. ``implementation``: ``"auto"`` picks cuDNN's fused (flash)
  kernel on GPUs for half-precision inputs and falls back to XLA whenever cuDNN cannot take the
  shapes; ``"xla"`` or ``"cudnn"`` force one. ``zero_init_out`` starts the output projection at
  zero (a residual branch that is the identity at initialisation).
  """

  channels: int
  num_heads: int = 1
  head_dim: int = -1
  implementation: Literal["auto", "xla", "cudnn"] = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  zero_init_out: bool = True

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None = None, mask: Array | None = None) -> Array:
    if inputs_kv is None:
      inputs_kv = inputs_q
    heads, dim = _heads(self.channels, self.num_heads, self.head_dim)
    dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw)
    b, l, _ = inputs_q.shape
    s = inputs_kv.shape[1]
    if mask is not None and tuple(mask.shape) != (b, s):
      raise ArgumentError(f"attention mask must have shape [batch, keys] = {(b, s)}, got {mask.shape}")
    q = dense(self.channels, "query")(inputs_q).reshape(b, l, heads, dim)
    k = dense(self.channels, "key")(inputs_kv).reshape(b, s, heads, dim)
    v = dense(self.channels, "value")(inputs_kv).reshape(b, s, heads, dim)
    mask4 = None if mask is None else jnp.asarray(mask, bool)[:, None, None, :]
    out = self._attend(q, k, v, mask4).reshape(b, l, self.channels)
    out_init = zeros_init if self.zero_init_out else nn.linear.default_kernel_init
    return dense(self.channels, "out", kernel_init=out_init)(out)

  def _attend(self, q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
    return dot_product_attention(q, k, v, mask, self.implementation)


def dot_product_attention(
  q: Array, k: Array, v: Array, mask: Array | None = None, implementation: str = "auto"
) -> Array:
  """``jax.nn.dot_product_attention`` over ``[B, L, heads, dim]`` queries and ``[B, S, heads, dim]``
  keys / values (``mask`` broadcastable to ``[B, heads, L, S]``, True = attend). ``"auto"`` asks
  for cuDNN's fused (flash) kernel on GPUs for half-precision inputs with head dims it takes and
  falls back to XLA whenever cuDNN refuses; ``"xla"`` or ``"cudnn"`` force one."""
  impl = implementation
  if impl not in ("auto", "xla", "cudnn"):
    raise ArgumentError(f"attention implementation must be auto, xla or cudnn, got {impl!r}")
  if impl == "auto":
    half = q.dtype in (jnp.bfloat16, jnp.float16)
    if jax.default_backend() == "gpu" and half and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128:
      try:
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
      except (RuntimeError, ValueError, NotImplementedError):
        pass  # this GPU / cuDNN / shape combination has no fused kernel: use XLA
    impl = "xla"
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


class AttentionBlock(nn.Module):
  """Residual self-attention over the spatial positions of an NHWC map (pre-GroupNorm,
  zero-initialised output). DDPM's block is ``num_heads=1``. ``norm=False`` leaves the GroupNorm
  out (diffusers' middle attention with ``resnet_time_scale_shift="scale_shift"``)."""

  num_heads: int = 1
  head_dim: int = -1
  num_groups: int = 32
  implementation: Literal["auto", "xla", "cudnn"] = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  epsilon: float = 1e-6
  norm: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    tokens = x
    if self.norm:
      tokens = GroupNorm(
        self.num_groups, self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
      )(x)
    tokens = tokens.reshape(b, h * w, c)
    out = MultiHeadAttention(
      c,
      self.num_heads,
      self.head_dim,
      self.implementation,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="attention",
    )(tokens)
    return x + out.reshape(b, h, w, c)


class FeedForward(nn.Module):
  """Position-wise feed-forward layer of a transformer block: GEGLU (Shazeer 2020, as in
  latent diffusion), ``Dense(2 * inner) -> a * gelu(gate) -> Dense(channels)`` with
  ``inner = mult * channels``, or a plain GELU MLP when ``glu`` is False."""

  channels: int
  mult: int = 4
  glu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    inner = self.mult * self.channels
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    if self.glu:
      a, gate = jnp.split(dense(2 * inner, "proj_in")(x), 2, axis=-1)
      h = a * nn.gelu(gate)
    else:
      h = nn.gelu(dense(inner, "proj_in")(x))
    return dense(self.channels, "proj_out")(h)


class SpatialTransformer(nn.Module):
  """Self-attention, cross-attention to a context and a feed-forward layer over the spatial
  positions of an NHWC map: latent diffusion's (Stable Diffusion's) transformer block.

  ``GroupNorm -> Dense (proj_in) -> [LN -> self-attn, LN -> cross-attn(context, mask),
  LN -> GEGLU feed-forward], each residual -> Dense (proj_out, zero-initialised)``, added to the
  input: the identity at initialisation. ``context`` is ``[B, S, D]`` (any ``D``: keys and values
  are projected to the block's channels), ``context_mask`` bool ``[B, S]`` (True = attend; every
  row needs one True).
  """

  num_heads: int = 1
  head_dim: int = -1
  num_groups: int = 32
  ff_mult: int = 4
  implementation: Literal["auto", "xla", "cudnn"] = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array, context_mask: Array | None = None) -> Array:
    b, h, w, c = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn = lambda name: MultiHeadAttention(
      c, self.num_heads, self.head_dim, self.implementation, zero_init_out=False, name=name, **kw
    )
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, name=name, **kw)
    tokens = GroupNorm(self.num_groups, name="norm", **kw)(x).reshape(b, h * w, c)
    tokens = nn.Dense(c, name="proj_in", **kw)(tokens)
    tokens = tokens + attn("self_attn")(ln("norm_1")(tokens))
    tokens = tokens + attn("cross_attn")(ln("norm_2")(tokens), context.astype(self.dtype), context_mask)
    tokens = tokens + FeedForward(c, self.ff_mult, name="ff", **kw)(ln("norm_3")(tokens))
    out = nn.Dense(c, kernel_init=zeros_init, name="proj_out", **kw)(tokens)
    return x + out.reshape(b, h, w, c)


class LinearAttentionBlock(nn.Module):
  """Residual linear attention (Shen et al. 2018, as in lucidrains' UNet) for high
  resolutions: cost linear in the number of positions instead of quadratic.

  Queries are softmax-normalised over channels, keys over positions; the per-head context
  ``k^T v`` (``dim x dim``) is then read by every query.
  """

  num_heads: int = 4
  head_dim: int = 32
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    heads, dim = _heads(c, self.num_heads, self.head_dim)
    dense = lambda n, name, **kw: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw)
    tokens = GroupNorm(self.num_groups, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(
      x
    ).reshape(b, h * w, c)
    q, k, v = (dense(c, name)(tokens).reshape(b, h * w, heads, dim) for name in ("query", "key", "value"))
    q = jax.nn.softmax(q.astype(jnp.float32), axis=-1) * dim**-0.5
    k = jax.nn.softmax(k.astype(jnp.float32), axis=1)
    context = jnp.einsum("bnhd,bnhe->bhde", k, v.astype(jnp.float32))
    out = jnp.einsum("bhde,bnhd->bnhe", context, q).reshape(b, h * w, c).astype(self.dtype)
    out = dense(c, "out", kernel_init=zeros_init)(out)
    return x + out.reshape(b, h, w, c)


CONTEXT_NULLS = ("learned", "zeros")


class ContextWithNull(nn.Module):
  """The context every cross-attention reads, with the null context for classifier-free guidance.

  ``context`` is float ``[B, L, dim]`` (e.g. text-encoder embeddings) or, when ``vocab > 0``,
  int tokens ``[B, L]`` embedded here by a learned table (``[vocab, dim]``; a negative token is
  padding). ``context_mask`` (bool ``[B, L]``, default all True; padding tokens are always left
  out) marks the tokens to attend to.

  The null context is ``null_length`` tokens: a learned parameter ``null_context``
  ``[null_length, dim]`` (``null="learned"``) or zeros (``null="zeros"``). It is prepended to
  every context and attended to exactly when the example has no valid token: an example whose
  mask is all False (context dropout in training, the unconditional branch of guidance) sees
  the null context and nothing else, bit for bit what ``context=None`` (no context at all)
  gives. Returns ``(tokens [B, null_length + L, dim], mask [B, null_length + L])``.
  """

  dim: int
  vocab: int = 0
  null: str = "learned"
  null_length: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, context: Array | None, context_mask: Array | None, batch: int) -> tuple[Array, Array]:
    if self.null not in CONTEXT_NULLS:
      raise ConfigError(f"model.context_null must be one of {CONTEXT_NULLS}, got {self.null!r}")
    if self.null_length < 1:
      raise ConfigError(f"model.context_null_length must be >= 1, got {self.null_length}")
    shape = (self.null_length, self.dim)
    if self.null == "learned":
      null = self.param("null_context", nn.initializers.normal(self.dim**-0.5), shape, self.param_dtype)
    else:
      null = jnp.zeros(shape, self.param_dtype)
    null = jnp.broadcast_to(null.astype(self.dtype)[None], (batch,) + shape)
    if context is None:
      if context_mask is not None:
        raise ArgumentError("context_mask was given without a context")
      return null, jnp.ones((batch, self.null_length), bool)
    context = jnp.asarray(context)
    if self.vocab > 0:
      if context.ndim != 2 or context.shape[0] != batch or not jnp.issubdtype(context.dtype, jnp.integer):
        raise ConfigError(
          f"this model embeds context tokens (model.context_vocab={self.vocab}): "
          f"context must be int [batch={batch}, length], got {context.dtype} "
          f"{context.shape}"
        )
      valid = context >= 0
      tokens = nn.Embed(
        self.vocab, self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="token_embed"
      )(jnp.maximum(context, 0))
    else:
      if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != self.dim:
        raise ConfigError(
          f"context must have shape [batch={batch}, length, model.context_dim="
          f"{self.dim}], got {context.shape}"
        )
      valid = jnp.ones(context.shape[:2], bool)
      tokens = context.astype(self.dtype)
    if context_mask is not None:
      context_mask = jnp.asarray(context_mask)
      if tuple(context_mask.shape) != tuple(context.shape[:2]):
        raise ArgumentError(
          f"context_mask must have shape [batch, length] = {context.shape[:2]}, got {context_mask.shape}"
        )
      valid = valid & context_mask.astype(bool)
    use_null = ~jnp.any(valid, axis=1, keepdims=True)
    mask = jnp.concatenate([jnp.broadcast_to(use_null, (batch, self.null_length)), valid], axis=1)
    return jnp.concatenate([null, tokens], axis=1), mask
