"""The diffusion UNet (DDPM / improved-DDPM family), Flax linen, NHWC.

With ``channel_mult=(1, 2, 2, 2)``, ``num_res_blocks=2``, attention at 16x16 with one head,
dropout 0.1 and 128 base channels it is exactly the DDPM CIFAR-10 network (35.7M parameters);
``use_scale_shift_norm``, ``resblock_updown``, ``learn_sigma`` and multi-head attention give the
improved-DDPM / ADM variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.errors import ConfigError
from jaxdiff.models.attention import AttentionBlock, ContextWithNull, LinearAttentionBlock, SpatialTransformer
from jaxdiff.models.layers import (
  FIXED_TIME_EMBEDDINGS,
  FOURIER_SCALE,
  Downsample,
  GroupNorm,
  ResBlock,
  TimeEmbedding,
  Upsample,
  broadcast_timesteps,
  check_time_embedding,
  conv3x3,
  gap_time_input,
  resolve_labels,
  time_gap,
  with_image_condition,
  with_self_condition,
  zeros_init,
)

Array = jax.Array


class UNet(nn.Module):
  """Noise-prediction UNet: ``apply(variables, x, t, y=None, *, context=None, context_mask=None,
  x_cond=None, x_self_cond=None, train=False)``.

  ``x`` is ``[B, H, W, C]``, ``t`` the process time ``[B]`` (int or float), ``y`` int32 labels
  ``[B]`` (``None``, or the label ``num_classes``, is the null class used by classifier-free
  guidance). Returns float32 ``[B, H, W, out]`` with ``out = out_channels`` (default: ``C``),
  doubled when ``learn_sigma``. Dropout draws from the ``"dropout"`` rng when ``train``.

  Cross-attention conditioning (``context_dim > 0``): ``context`` is float ``[B, L,
  context_dim]`` or, with ``context_vocab > 0``, int tokens ``[B, L]`` (negative = padding);
  ``context_mask`` bool ``[B, L]``. Every attention resolution and the middle then hold a
  ``SpatialTransformer`` (self-attention, cross-attention to the context, GEGLU feed-forward).
  ``context=None``, or a mask that is all False for an example, gives the null context
  (``context_null``: learned tokens or zeros; see ``attention.ContextWithNull``): the
  unconditional branch of classifier-free guidance. Image conditioning (``cond_channels > 0``):
  ``x_cond`` ``[B, H, W, cond_channels]`` is concatenated to the input channels (SR3 / Palette).

  Layout: a 3x3 input conv; per level ``num_res_blocks`` residual blocks (self-attention after
  each at ``attention_resolutions``, linear attention at ``linear_attention_resolutions``) and a
  downsampling; a middle block (res, attention, res); a mirrored decoder with
  ``num_res_blocks + 1`` blocks per level fed by skip concatenations; GroupNorm, SiLU and a
  zero-initialised 3x3 output conv. Resolutions are feature-map heights in pixels.

  Time: ``time_input`` says what ``t`` is: ``"index"`` (the discrete chain's timestep, the
  default: DDPM's embedding, bit for bit), ``"unit"`` (t in [0, 1], embedded as 1000 t) or
  ``"log_sigma"`` (EDM's sigma, through c_noise = ln(sigma) / 4); ``time_embedding`` is
  ``"sinusoidal"`` (default) or ``"fourier"`` (fixed Gaussian random Fourier features of std
  ``fourier_scale``), followed by the same two-layer MLP (``layers.TimeEmbedding``, whose
  parameters do not depend on the choice; the math is in ``layers.time_features``).
  ``second_time``: a two-time network for one-step models, called with ``r=`` (the time the step
  lands on); the interval ``t - r`` gets an embedding of its own (``second_time_embed``) added to
  the time's, and ``r=None`` means ``r = t``.

  Layout options that express diffusers' ``UNet2DModel`` (``jaxdiff.interop``), each off by
  default: ``attention_levels`` (levels, 0-based, whose blocks attend, besides
  ``attention_resolutions``), ``mid_attention`` / ``mid_attention_norm`` (the middle block's
  attention and its GroupNorm), ``norm_eps`` (every GroupNorm's epsilon), ``flip_sin_to_cos`` /
  ``freq_shift`` (the sinusoid's layout, ``layers.timestep_embedding``), ``downsample_padding``
  (0: DDPM's bottom/right-only padding of the strided conv) and ``time_embed_dim`` (the time
  MLP's width; -1: 4 x ``base_channels``).
  """

  base_channels: int = 64
  channel_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  attention_resolutions: Sequence[int] = (16,)
  linear_attention_resolutions: Sequence[int] = ()
  num_heads: int = 4
  head_dim: int = -1
  dropout: float = 0.0
  resblock_updown: bool = False
  conv_resample: bool = True
  use_scale_shift_norm: bool = False
  num_groups: int = 32
  in_channels: int = -1  # > 0: checked against the input's channels
  out_channels: int = -1  # -1: the input's channels
  learn_sigma: bool = False
  num_classes: int = 0
  self_condition: bool = False
  attention_impl: str = "auto"
  context_dim: int = 0  # > 0: cross-attention to a context of this width
  context_vocab: int = 0  # > 0: the context is int tokens embedded by a learned table
  context_null: str = "learned"  # the null context: "learned" tokens or "zeros"
  context_null_length: int = 1
  transformer_ff_mult: int = 4
  cond_channels: int = 0  # > 0: x_cond images concatenated to the input
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  time_input: str = "index"  # layers.TIME_INPUTS: "index" | "unit" | "log_sigma"
  time_embedding: str = "sinusoidal"  # layers.FIXED_TIME_EMBEDDINGS (a learned table is the MLP's only)
  fourier_scale: float = FOURIER_SCALE
  attention_levels: Sequence[int] = ()  # levels (0-based) with self-attention, besides attention_resolutions
  mid_attention: bool = True  # the middle block's attention (diffusers' add_attention)
  mid_attention_norm: bool = True  # its GroupNorm (diffusers leaves it out with scale_shift)
  norm_eps: float = 1e-6  # every GroupNorm's epsilon
  flip_sin_to_cos: bool = False  # sinusoidal time embedding: cos half first
  freq_shift: float = 1.0  # sinusoid frequencies exp(-ln(1e4) i / (half - freq_shift))
  downsample_padding: int = 1  # strided conv padding: 1 all round | 0: bottom/right only (DDPM)
  time_embed_dim: int = -1  # width of the time embedding MLP; -1: 4 * base_channels
  second_time: bool = False  # a two-time network: also embeds t - r (one-step models, `r=`)

  def __post_init__(self) -> None:
    check_time_embedding(self.time_input, self.time_embedding, FIXED_TIME_EMBEDDINGS)
    super().__post_init__()

  def _check(self, x: Array) -> None:
    if x.ndim != 4:
      raise ConfigError(f"UNet expects NHWC images [B, H, W, C], got shape {x.shape}")
    if not self.channel_mult:
      raise ConfigError("model.channel_mult must name at least one level")
    if self.in_channels > 0 and x.shape[-1] != self.in_channels:
      raise ConfigError(
        f"model.in_channels={self.in_channels} but the input has {x.shape[-1]} channels (shape {x.shape})"
      )
    factor = 2 ** (len(self.channel_mult) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ConfigError(
        f"image size {x.shape[1]}x{x.shape[2]} is not divisible by {factor}, "
        f"which the {len(self.channel_mult)} levels of model.channel_mult="
        f"{tuple(self.channel_mult)} need"
      )
    overlap = set(self.attention_resolutions) & set(self.linear_attention_resolutions)
    if overlap:
      raise ConfigError(
        f"resolutions {sorted(overlap)} are in both model.attention_resolutions "
        "and model.linear_attention_resolutions"
      )

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
    x = jnp.asarray(x)
    self._check(x)
    batch, channels = x.shape[0], x.shape[-1]
    out_channels = self.out_channels if self.out_channels > 0 else channels
    if self.learn_sigma:
      out_channels *= 2
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    emb = self._embedding(t, r, y, batch, kw)
    ctx, ctx_mask = self._context(context, context_mask, batch, kw)
    res, attend = self._block_makers(emb, ctx, ctx_mask, train, kw)

    h = with_self_condition(x, x_self_cond, self.self_condition)
    h = with_image_condition(h, x_cond, self.cond_channels).astype(self.dtype)
    h = conv3x3(self.base_channels, self.dtype, self.param_dtype, "conv_in")(h)
    h, skips = self._encoder(h, res, attend, kw)
    h = res(h, h.shape[-1], "mid_res_0")
    if self.mid_attention:
      h = attend(h, "mid_attn", force=True, norm=self.mid_attention_norm)
    h = res(h, h.shape[-1], "mid_res_1")
    h = self._decoder(h, skips, res, attend, kw)
    h = GroupNorm(self.num_groups, self.norm_eps, silu=True, name="norm_out", **kw)(h)
    h = conv3x3(out_channels, self.dtype, self.param_dtype, "conv_out", kernel_init=zeros_init)(h)
    return h.astype(jnp.float32)

  def _embedding(self, t: Array, r: Array | None, y: Array | None, batch: int, kw: dict) -> Array:
    """The conditioning vector: time embedding (+ the interval t - r of a two-time network, + the
    class embedding, null class = num_classes). Called from __call__, so its submodules are inline."""
    emb_dim = self.time_embed_dim if self.time_embed_dim > 0 else 4 * self.base_channels
    t = broadcast_timesteps(t, batch)
    emb = TimeEmbedding(
      self.base_channels,
      emb_dim,
      time_input=self.time_input,
      time_embedding=self.time_embedding,
      fourier_scale=self.fourier_scale,
      flip_sin_to_cos=self.flip_sin_to_cos,
      freq_shift=self.freq_shift,
      name="time_embed",
      **kw,
    )(t)
    gap = time_gap(t, r, batch, self.second_time)
    if gap is not None:  # a two-time network: the interval t - r, embedded like the time
      emb = emb + TimeEmbedding(
        self.base_channels,
        emb_dim,
        time_input=gap_time_input(self.time_input),
        time_embedding=self.time_embedding,
        fourier_scale=self.fourier_scale,
        name="second_time_embed",
        **kw,
      )(gap)
    labels = resolve_labels(y, batch, self.num_classes)
    if labels is not None:
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, name="label_embed", **kw)(labels)
    return emb

  def _context(self, context: Array | None, context_mask: Array | None, batch: int, kw: dict):
    """Cross-attention tokens and mask (the learned null context where none is given), or (None, None)."""
    if self.context_dim > 0:
      return ContextWithNull(
        self.context_dim,
        self.context_vocab,
        self.context_null,
        self.context_null_length,
        name="context",
        **kw,
      )(context, context_mask, batch)
    if context is not None or context_mask is not None:
      raise ConfigError("a context was given but the network has no cross-attention (model.context_dim = 0)")
    return None, None

  def _block_makers(self, emb: Array, ctx: Array | None, ctx_mask: Array | None, train: bool, kw: dict):
    """`res(h, ch, name, resample)` and `attend(h, name, ...)`: a named residual block, and the
    attention a resolution or level asks for (cross-attention when there is a context), else h."""
    res_cls = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
    attn_cls = nn.remat(AttentionBlock) if self.remat else AttentionBlock
    lin_cls = nn.remat(LinearAttentionBlock) if self.remat else LinearAttentionBlock
    xf_cls = nn.remat(SpatialTransformer) if self.remat else SpatialTransformer

    def res(h, ch, name, resample=None):
      return res_cls(
        ch,
        self.dropout,
        self.use_scale_shift_norm,
        resample,
        self.num_groups,
        name=name,
        epsilon=self.norm_eps,
        **kw,
      )(h, emb, train)

    def attend(h, name, force=False, level=None, norm=True):
      if force or h.shape[1] in self.attention_resolutions or level in self.attention_levels:
        if ctx is not None:
          return xf_cls(
            self.num_heads,
            self.head_dim,
            self.num_groups,
            self.transformer_ff_mult,
            self.attention_impl,
            name=name,
            **kw,
          )(h, ctx, ctx_mask)
        return attn_cls(
          self.num_heads,
          self.head_dim,
          self.num_groups,
          self.attention_impl,
          name=name,
          epsilon=self.norm_eps,
          norm=norm,
          **kw,
        )(h)
      if h.shape[1] in self.linear_attention_resolutions:
        return lin_cls(self.num_heads, self.head_dim, self.num_groups, name=name, **kw)(h)
      return h

    return res, attend

  def _encoder(self, h: Array, res, attend, kw: dict) -> tuple[Array, list[Array]]:
    """The downsampling path; returns its output and the skip connections, input first."""
    skips = [h]
    last = len(self.channel_mult) - 1
    for level, mult in enumerate(self.channel_mult):
      ch = self.base_channels * mult
      for i in range(self.num_res_blocks):
        h = res(h, ch, f"down_{level}_res_{i}")
        h = attend(h, f"down_{level}_attn_{i}", level=level)
        skips.append(h)
      if level != last:
        if self.resblock_updown:
          h = res(h, ch, f"down_{level}_downsample", resample="down")
        else:
          h = Downsample(
            ch, self.conv_resample, name=f"down_{level}_downsample", padding=self.downsample_padding, **kw
          )(h)
        skips.append(h)
    return h, skips

  def _decoder(self, h: Array, skips: list[Array], res, attend, kw: dict) -> Array:
    """The upsampling path, each block fed the matching skip connection (consumed last first)."""
    for level in reversed(range(len(self.channel_mult))):
      ch = self.base_channels * self.channel_mult[level]
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res(h, ch, f"up_{level}_res_{i}")
        h = attend(h, f"up_{level}_attn_{i}", level=level)
      if level != 0:
        if self.resblock_updown:
          h = res(h, ch, f"up_{level}_upsample", resample="up")
        else:
          h = Upsample(ch, self.conv_resample, name=f"up_{level}_upsample", **kw)(h)
    return h
