"""Conditioning beyond class labels: cross-attention context (null context, masks, guidance),
conditioning images (x_cond), inpainting with RePaint resampling, captions, the "sr" data
transform, the train step's context dropout, and bulk sampling with these inputs.

Model behaviour is probed from one compiled function per network with random parameters (no
zero-initialised layer hides an input's effect); sampler identities use closed-form models.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params, tiny_image_config

import jaxdiff
from jaxdiff import samplers, schedules
from jaxdiff.conditioning import Conditioning
from jaxdiff.data import captions
from jaxdiff.data.derived_inputs import add_conditioning, downsample, sr_input, upsample_bicubic
from jaxdiff.models import UNet, create_model, dummy_inputs

SCHED = schedules.linear(1000)
MU, SD = 0.5, 0.3


pytestmark = pytest.mark.usefixtures("fast_compiles")


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


TINY = dict(
  base_channels=8,
  channel_mult=(1, 2),
  num_res_blocks=1,
  attention_resolutions=(4,),
  num_heads=2,
  num_groups=4,
  in_channels=1,
)


# ---------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def context_probe():
  """A tiny UNet with float contexts (learned null) and a conditioning image, every variation
  the tests compare computed by one compiled function."""
  model = UNet(**TINY, context_dim=6, cond_channels=1, transformer_ff_mult=2)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t = jnp.array([10, 700], jnp.int32)
  ctx = jax.random.normal(jax.random.key(2), (2, 3, 6))
  ctx2 = jax.random.normal(jax.random.key(3), (2, 3, 6))
  xc = jax.random.normal(jax.random.key(4), (2, 8, 8, 1))
  params = random_params(model, x, t, context=ctx, x_cond=xc)
  garbage = 100.0 * jax.random.normal(jax.random.key(5), (2, 2, 6))

  @jax.jit
  def probe(params):
    f = lambda **k: model.apply(params, x, t, **k)
    first_dropped = jnp.array([[False] * 3, [True] * 3])
    return dict(
      base=f(context=ctx, x_cond=xc),
      other_ctx=f(context=ctx2, x_cond=xc),
      other_xc=f(context=ctx, x_cond=xc + 1.0),
      null=f(context=None, x_cond=xc),
      first_dropped=f(context=ctx, context_mask=first_dropped, x_cond=xc),
      padded=f(
        context=jnp.concatenate([ctx, garbage], axis=1),
        context_mask=jnp.concatenate([jnp.ones((2, 3), bool), jnp.zeros((2, 2), bool)], axis=1),
        x_cond=xc,
      ),
    )

  out = {k: np.asarray(v) for k, v in probe(params).items()}
  out["params"] = params
  return out


def test_context_unet_shapes_dtypes_and_parameters(context_probe):
  assert context_probe["base"].shape == (2, 8, 8, 1) and context_probe["base"].dtype == np.float32
  assert np.all(np.isfinite(context_probe["base"]))
  p = context_probe["params"]["params"]
  assert p["context"]["null_context"].shape == (1, 6)
  # transformer blocks at 4x4 and in the middle: self-attention, cross-attention, feed-forward
  for name in ("down_1_attn_0", "mid_attn", "up_1_attn_0", "up_1_attn_1"):
    assert {"self_attn", "cross_attn", "ff", "proj_in", "proj_out"} <= set(p[name]), name
  assert p["mid_attn"]["cross_attn"]["key"]["kernel"].shape == (6, 16)  # context width 6 -> 16 channels
  assert p["conv_in"]["kernel"].shape[2] == 2  # x and x_cond


def test_context_and_x_cond_change_the_output(context_probe):
  assert rel(context_probe["other_ctx"], context_probe["base"]) > 1e-3
  assert rel(context_probe["other_xc"], context_probe["base"]) > 1e-3
  assert rel(context_probe["null"], context_probe["base"]) > 1e-3


def test_null_context_is_the_all_masked_context(context_probe):
  """context=None and an all-False mask are the same unconditional branch, per example."""
  np.testing.assert_allclose(
    context_probe["first_dropped"][0], context_probe["null"][0], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    context_probe["first_dropped"][1], context_probe["base"][1], rtol=1e-5, atol=1e-6
  )


def test_context_mask_leaves_out_padding(context_probe):
  """Masked tokens (here of size 100) change nothing."""
  np.testing.assert_allclose(context_probe["padded"], context_probe["base"], rtol=1e-5, atol=1e-6)


def test_token_context_zeros_null_and_padding_tokens():
  """Int tokens embedded in the model; the "zeros" null context is a zero token (no parameter);
  a padding token (-1) is left out; a caption of padding only is the null context."""
  model = UNet(**TINY, context_dim=4, context_vocab=15, context_null="zeros", transformer_ff_mult=1)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t = jnp.array([5, 900], jnp.int32)
  tok = jnp.array([[3, 11, 14], [7, 10, 12]], jnp.int32)
  params = random_params(model, x, t, context=tok)
  assert set(params["params"]["context"]) == {"token_embed"}

  @jax.jit
  def probe(params):
    f = lambda **k: model.apply(params, x, t, **k)
    return dict(
      base=f(context=tok),
      null=f(),
      pad=f(context=jnp.full((2, 3), -1, jnp.int32)),
      two=f(context=tok.at[:, 2].set(-1)),
      two_direct=f(context=tok[:, :2]),
    )

  out = {k: np.asarray(v) for k, v in probe(params).items()}
  np.testing.assert_allclose(out["pad"], out["null"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["two"], out["two_direct"], rtol=1e-5, atol=1e-6)
  assert rel(out["two"], out["base"]) > 1e-3 and rel(out["null"], out["base"]) > 1e-3


def test_conditioning_inputs_are_checked():
  plain = UNet(**TINY)
  x, t = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32)
  with pytest.raises(ValueError, match="context_dim = 0"):
    jax.eval_shape(lambda: plain.init(jax.random.key(0), x, t, context=jnp.zeros((1, 2, 4))))
  with pytest.raises(ValueError, match="cond_channels = 0"):
    jax.eval_shape(lambda: plain.init(jax.random.key(0), x, t, x_cond=x))
  sr = UNet(**TINY, cond_channels=1)
  with pytest.raises(ValueError, match="pass x_cond"):
    jax.eval_shape(lambda: sr.init(jax.random.key(0), x, t))
  ctx = UNet(**TINY, context_dim=4)
  with pytest.raises(ValueError, match="context_dim=4"):
    jax.eval_shape(lambda: ctx.init(jax.random.key(0), x, t, context=jnp.zeros((1, 2, 5))))
  with pytest.raises(ValueError, match="context_null"):
    create_model({"model": dict(TINY, context_dim=4, context_null="random")})


def test_create_model_and_dummy_inputs_read_the_new_fields():
  c = tiny_image_config()
  c.model.context_dim, c.model.context_vocab, c.model.cond_channels = 8, 15, 1
  c.model.context_null, c.model.transformer_ff_mult = "zeros", 3
  m = create_model(c)
  assert (m.context_dim, m.context_vocab, m.cond_channels, m.context_null, m.transformer_ff_mult) == (
    8,
    15,
    1,
    "zeros",
    3,
  )
  x, t, kw = dummy_inputs(c, 2)
  assert kw["context"].shape == (2, 1) and kw["context"].dtype == jnp.int32
  assert kw["x_cond"].shape == (2, 8, 8, 1)
  out = jax.eval_shape(lambda: m.apply(m.init(jax.random.key(0), x, t, **kw), x, t, **kw))
  assert out.shape == x.shape and out.dtype == jnp.float32


# ---------------------------------------------------------------- guidance with a context


def _ctx_model(x, t, context=None, context_mask=None, x_cond=None):
  """Closed form: the output moves with the masked mean of the context (0 for the null context)
  and with x_cond."""
  w = context_mask.astype(jnp.float32)
  mean = jnp.sum(context[..., 0] * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
  return jnp.tanh(x) * 0.5 + 0.1 * mean[:, None, None, None] + 0.05 * x_cond


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "ddpm", "heun"])
def test_guidance_identities_with_context(sampler):
  B, L = 4, 3
  ctx = jax.random.normal(jax.random.key(1), (B, L, 2))
  ones, zeros = jnp.ones((B, L), bool), jnp.zeros((B, L), bool)
  xc = jax.random.normal(jax.random.key(2), (B, 4, 4, 1))
  kw = dict(sampler=sampler, num_steps=8)
  run = lambda **k: np.asarray(jaxdiff.sample(_ctx_model, SCHED, (B, 4, 4, 1), jax.random.key(0), **kw, **k))
  cond = {"context": ctx, "context_mask": ones, "x_cond": xc}
  uncond = {"context_mask": zeros}  # context and x_cond are shared with the conditional branch
  c = run(cond=cond)
  u = run(cond={"context": ctx, "context_mask": zeros, "x_cond": xc})
  np.testing.assert_allclose(run(cond=cond, uncond=uncond, guidance_scale=1.0), c, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(run(cond=cond, uncond=uncond, guidance_scale=0.0), u, rtol=1e-5, atol=1e-5)
  # linear in the context mean: scale 3 is the model with 3 * mean(context) (the null's mean is 0)
  want = run(cond={"context": 3.0 * ctx, "context_mask": ones, "x_cond": xc})
  np.testing.assert_allclose(run(cond=cond, uncond=uncond, guidance_scale=3.0), want, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="cond lacks"):
    run(cond={"x_cond": xc}, uncond={"context_mask": zeros}, guidance_scale=2.0)


# ---------------------------------------------------------------- inpainting


def exact_eps(x, t):
  """eps* for data N(MU, SD^2) in every coordinate."""
  a = SCHED.alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * MU) / (a * SD**2 + 1 - a)


def _half_mask():
  return (jnp.arange(8)[:, None, None] < 4).astype(jnp.float32)  # [8, 1, 1]: top half known


def test_repaint_schedule_closed_form():
  steps, jump_from = samplers.repaint_schedule(6, 1, 3)
  np.testing.assert_array_equal(steps, np.arange(6))
  np.testing.assert_array_equal(jump_from, 0)
  steps, jump_from = samplers.repaint_schedule(6, 2, 2)
  np.testing.assert_array_equal(steps, [0, 1, 2, 1, 2, 3, 4, 3, 4, 5])
  np.testing.assert_array_equal(jump_from, [0, 0, 0, 3, 0, 0, 0, 5, 0, 0])
  for n, r, j in ((50, 3, 5), (20, 10, 1), (7, 4, 3), (10, 2, 10)):
    steps, jump_from = samplers.repaint_schedule(n, r, j)
    points = len(range(n - 1, j - 1, -j))
    assert len(steps) == n + points * (r - 1) * j, (n, r, j)
    assert steps[-1] == n - 1 and (steps == n - 1).sum() == 1  # the clean step once, at the end
    # consecutive steps, or a jump back by exactly j from the position reached
    for k in range(1, len(steps)):
      if jump_from[k]:
        assert jump_from[k] == steps[k - 1] + 1 and steps[k] == jump_from[k] - j
      else:
        assert steps[k] == steps[k - 1] + 1


@pytest.mark.parametrize("sampler,resample", [("ddpm", 3), ("ddim", 1), ("dpmpp_2m", 3)])
def test_inpainting_keeps_the_known_region_exactly(sampler, resample):
  known = jax.random.uniform(jax.random.key(5), (3, 8, 8, 1), minval=-1, maxval=1)
  run = lambda paste: np.asarray(
    jaxdiff.sample(
      exact_eps,
      SCHED,
      (3, 8, 8, 1),
      jax.random.key(0),
      sampler=sampler,
      num_steps=10,
      inpaint_mask=_half_mask(),
      inpaint_known=known,
      repaint_resample=resample,
      repaint_jump=3,
      paste_known=paste,
    )
  )
  x, k = run(True), np.asarray(known)
  assert x.shape == (3, 8, 8, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(x[:, :4], k[:, :4])
  assert np.all(np.isfinite(x)) and not np.allclose(x[:, 4:], k[:, 4:], atol=0.05)
  if sampler == "ddpm":
    kept = run(False)
    assert not np.array_equal(kept[:, :4], k[:, :4])  # the model's own last step
    np.testing.assert_array_equal(kept[:, 4:], x[:, 4:])  # nothing else changes


def test_inpainting_with_an_empty_mask_is_plain_sampling():
  """Mask 0 everywhere and no resampling: exactly the unconditional sample (same key, same noise)."""
  kw = dict(sampler="ddpm", num_steps=12)
  plain = jaxdiff.sample(exact_eps, SCHED, (4, 8, 8, 1), jax.random.key(3), **kw)
  inp = jaxdiff.sample(
    exact_eps,
    SCHED,
    (4, 8, 8, 1),
    jax.random.key(3),
    inpaint_mask=jnp.zeros(()),
    inpaint_known=jnp.ones((4, 8, 8, 1)),
    **kw,
  )
  np.testing.assert_array_equal(np.asarray(inp), np.asarray(plain))


def test_repaint_resampling_keeps_the_marginal_and_approaches_the_exact_conditional():
  """Exact models of Gaussian data. Unmasked, RePaint's forward jumps keep DDPM's distribution.
  With x = (x1, x2) ~ N(0, [[1, r], [r, 1]]) and x1 = c known, the exact completion is
  N(r c, 1 - r^2); plain replacement is known to fall short of it, resampling closes the gap."""
  kw = dict(
    sampler="ddpm", num_steps=40, variance="fixed_large"
  )  # ~exact at 40 steps (fixed_small: std 0.24)
  plain = jaxdiff.sample(exact_eps, SCHED, (8000, 1), jax.random.key(0), **kw)
  x = jaxdiff.sample(
    exact_eps,
    SCHED,
    (8000, 1),
    jax.random.key(0),
    inpaint_mask=jnp.zeros(()),
    inpaint_known=jnp.zeros((8000, 1)),
    repaint_resample=3,
    repaint_jump=4,
    **kw,
  )
  assert abs(float(x.mean()) - MU) < 0.02 and abs(float(x.std()) - float(plain.std())) < 0.015
  assert abs(float(plain.std()) - SD) < 0.04
  r, c, n = 0.8, 1.0, 4000
  cov = jnp.array([[1.0, r], [r, 1.0]])

  def eps_corr(x, t):
    a = SCHED.alphas_cumprod[t][:, None, None]
    return jnp.sqrt(1 - a[:, :, 0]) * jnp.linalg.solve(a * cov + (1 - a) * jnp.eye(2), x[..., None])[..., 0]

  known = jnp.tile(jnp.array([[c, 0.0]]), (n, 1))
  run = lambda res, jump: np.asarray(
    jaxdiff.sample(
      eps_corr,
      SCHED,
      (n, 2),
      jax.random.key(1),
      sampler="ddpm",
      num_steps=50,
      inpaint_mask=jnp.array([1.0, 0.0]),
      inpaint_known=known,
      repaint_resample=res,
      repaint_jump=jump,
    )
  )
  plain, resampled = run(1, 1), run(10, 5)
  assert np.all(plain[:, 0] == c) and np.all(resampled[:, 0] == c)
  gap_plain, gap_resampled = abs(plain[:, 1].mean() - r * c), abs(resampled[:, 1].mean() - r * c)
  assert gap_plain > 0.2 and gap_resampled < 0.1, (gap_plain, gap_resampled)
  assert abs(resampled[:, 1].std() - math.sqrt(1 - r * r)) < 0.1


def test_inpainting_is_one_compiled_scan():
  f = samplers.scan._sample_jitted()
  f.clear_cache()
  known = jnp.zeros((2, 8, 8, 1))
  kw = dict(sampler="ddim", num_steps=6, repaint_resample=2, repaint_jump=2)
  jaxdiff.sample(
    exact_eps, SCHED, (2, 8, 8, 1), jax.random.key(0), inpaint_mask=_half_mask(), inpaint_known=known, **kw
  )
  jaxdiff.sample(
    exact_eps,
    SCHED,
    (2, 8, 8, 1),
    jax.random.key(1),
    inpaint_mask=1.0 - _half_mask(),
    inpaint_known=known + 0.5,
    **kw,
  )
  assert f._cache_size() == 1  # new masks, images and keys: the same program

  def count(jaxpr, name):
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == name
      for sub in jax.core.jaxprs_in_params(eqn.params):
        n += count(sub, name)
    return n

  jaxpr = jax.make_jaxpr(
    lambda k, m: jaxdiff.sample(exact_eps, SCHED, (2, 8, 8, 1), k, inpaint_mask=m, inpaint_known=known, **kw)
  )(jax.random.key(0), _half_mask())
  assert (
    count(jaxpr.jaxpr, "scan") == 1 and count(jaxpr.jaxpr, "cond") == 0 and count(jaxpr.jaxpr, "while") == 0
  )


def test_inpainting_arguments_are_checked():
  s = lambda **k: jaxdiff.sample(exact_eps, SCHED, (2, 8, 8, 1), jax.random.key(0), num_steps=4, **k)
  with pytest.raises(ValueError, match="both"):
    s(inpaint_mask=_half_mask())
  with pytest.raises(ValueError, match="samplers"):
    s(sampler="heun", inpaint_mask=_half_mask(), inpaint_known=jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="shape"):
    s(inpaint_mask=_half_mask(), inpaint_known=jnp.zeros((3, 8, 8, 1)))
  with pytest.raises(ValueError, match="broadcast"):
    s(inpaint_mask=jnp.ones((3, 3)), inpaint_known=jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="apply to inpainting"):
    s(repaint_resample=3)


# ---------------------------------------------------------------- data: captions and the "sr" transform


def test_captions_describe_their_images():
  from jaxdiff.data.embedded import load_digits_split

  x, y = load_digits_split("train")
  tok = captions.caption_tokens(x, y)
  assert tok.shape == (len(x), 3) and tok.dtype == np.int32
  np.testing.assert_array_equal(tok[:, 0], y)
  # class-relative thresholds: within each class the attribute values are balanced
  for c in range(10):
    sel = tok[y == c]
    assert abs(np.mean(sel[:, 1] == 11) - 0.5) < 0.05
    assert all(abs(np.mean(sel[:, 2] == 12 + b) - 1 / 3) < 0.05 for b in range(3))
  # a thicker stroke is "thick", a sheared one "slanted-right"
  thin = np.full((1, 8, 8, 1), -1.0, np.float32)
  thin[0, 1:7, 3] = 1.0
  thick = thin.copy()
  thick[0, 1:7, 1:6] = 1.0
  assert captions.caption_tokens(thin, [1])[0, 1] == 10 and captions.caption_tokens(thick, [1])[0, 1] == 11
  lean = np.full((1, 8, 8, 1), -1.0, np.float32)
  for r in range(1, 7):
    lean[0, r, 6 - r] = 1.0  # "/": the column falls as the row grows
  assert captions.slant(lean)[0] > 0.5 and captions.caption_tokens(lean, [1])[0, 2] == 14
  assert captions.caption_text(captions.parse_caption("thick 3 slanted-right")) == "3 thick slanted-right"
  np.testing.assert_array_equal(captions.parse_caption("7"), [7, -1, -1])
  with pytest.raises(ValueError, match="vocabulary"):
    captions.parse_caption("3 bold")
  assert captions.all_captions().shape == (60, 3) and len(np.unique(captions.all_captions(), axis=0)) == 60


def test_sr_transform():
  c = tiny_image_config()
  c.data.cond = "sr"
  from jaxdiff.data import create_dataset

  batch = next(create_dataset(c))
  assert set(batch) == {"x", "label", "x_cond"} and batch["x_cond"].shape == batch["x"].shape
  low, up = sr_input(batch["x"], 2)
  np.testing.assert_array_equal(batch["x_cond"], up)
  np.testing.assert_allclose(low, batch["x"].reshape(16, 4, 2, 4, 2, 1).mean(axis=(2, 4)), rtol=1e-6)
  # bicubic reproduces constants and linear ramps away from the border, stays in [-1, 1]
  np.testing.assert_allclose(upsample_bicubic(np.full((1, 4, 4, 1), 0.3, np.float32), 8), 0.3, atol=1e-6)
  ramp = np.tile(np.linspace(-0.6, 0.6, 4, dtype=np.float32)[None, :, None], (4, 1, 1))[None]
  up = upsample_bicubic(ramp, 8)[0, :, :, 0]  # columns 3 and 4 have all four taps inside the image
  np.testing.assert_allclose(up[:, 4] - up[:, 3], 0.2, atol=1e-5)
  assert np.all(np.diff(up, axis=1) > 0)
  assert downsample(np.zeros((2, 8, 8, 3)), 4).shape == (2, 2, 2, 3)
  c.data.cond = "caption"
  batch = add_conditioning(next(create_dataset(tiny_image_config())), c.data)
  np.testing.assert_array_equal(batch["context"], captions.caption_tokens(batch["x"], batch["label"]))
  c.data.cond = "depth"
  with pytest.raises(ValueError, match="data.cond"):
    next(create_dataset(c))


def test_config_checks_for_conditioning():
  from helpers import load_config_file

  from jaxdiff.config_utils import ConfigError, check_training_conditioning, validate_config

  for name in ("digits_context", "digits_sr"):
    validate_config(load_config_file(name))
    check_training_conditioning(load_config_file(name))
  c = load_config_file("digits_context")
  c.model.context_vocab = 10
  with pytest.raises(ConfigError, match="context_vocab >= 15"):
    validate_config(c)
  c = load_config_file("digits_sr")
  c.model.cond_channels = 0
  with pytest.raises(ConfigError, match="cond_channels=1"):
    validate_config(c)
  c = load_config_file("digits")
  c.model.context_dim = 8
  with pytest.raises(ConfigError, match="carry no context"):
    check_training_conditioning(c)


# ---------------------------------------------------------------- the train step


def test_train_step_context_dropout_shares_the_label_draw():
  from helpers import load_config_file

  from jaxdiff.training.step import context_dropout

  def _conditioning(c, batch, key):
    return Conditioning.from_config(c).train_kwargs(batch, key)

  c = load_config_file("digits_context")
  assert context_dropout(c) == 0.1
  c.train.context_dropout = -1.0
  c.train.label_dropout = 0.4
  assert context_dropout(c) == 0.4
  c.model.num_classes = 10  # labels and context together
  b = 512
  rng = np.random.default_rng(0)
  batch = {
    "x": np.zeros((b, 8, 8, 1), np.float32),
    "label": rng.integers(0, 10, b).astype(np.int32),
    "context": rng.integers(0, 15, (b, 3)).astype(np.int32),
  }
  key = jax.random.key(7)
  cond = _conditioning(c, batch, key)
  dropped_label = np.asarray(cond["y"]) == 10
  mask = np.asarray(cond["context_mask"])
  np.testing.assert_array_equal(dropped_label, np.asarray(jax.random.bernoulli(key, 0.4, (b,))))
  np.testing.assert_array_equal(~mask.any(axis=1), dropped_label)  # the same examples lose both
  assert np.all(mask.all(axis=1) | ~mask.any(axis=1))
  np.testing.assert_array_equal(cond["context"], batch["context"])
  c.train.context_dropout = 0.0
  assert np.asarray(_conditioning(c, batch, key)["context_mask"]).all()
  c.model.cond_channels = 1
  with pytest.raises(ValueError, match="x_cond"):
    _conditioning(c, batch, key)


# ---------------------------------------------------------------- bulk sampling (sample.py)


def _workdir_with_random_weights(path, config):
  """A training workdir (config.json and a checkpoint, as train() writes them) with random weights:
  behaviour of the sampling path without paying for training."""
  from jaxdiff.training import Checkpointer, create_train_state, save_config

  model = create_model(config)
  abstract = jax.eval_shape(lambda: create_train_state(config, model, jax.random.key(0)))
  state = jax.tree_util.tree_map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), abstract)
  x, t, kw = dummy_inputs(config)
  params = random_params(model, x, t, **kw)["params"]
  state = state.replace(params=params, ema_params=params)
  ck = Checkpointer(str(path), async_save=False)
  ck.save(state)
  ck.close()
  save_config(config, str(path))
  return str(path)


def test_bulk_inpainting_keeps_the_source_and_records_the_run(tmp_path):
  from jaxdiff import images
  from jaxdiff.bulk import SamplingError, generate, read_shard
  from jaxdiff.data.embedded import load_digits_split

  c = tiny_image_config()
  c.sample.num_steps = 3
  wd = _workdir_with_random_weights(tmp_path / "run", c)
  out = str(tmp_path / "inpaint")
  kw = dict(
    num_samples=6,
    labels="none",
    sampler="ddpm",
    inpaint_source="digits_test",
    inpaint_mask="top_half",
    repaint_resample=2,
    repaint_jump=1,
    shard_size=6,
    progress=False,
  )
  summary = generate(wd, out, **kw)
  x = read_shard(os.path.join(out, summary["files"][0]))["images"]
  src = images.to_uint8(load_digits_split("test")[0][:6])
  np.testing.assert_array_equal(x[:, :4], src[:, :4])
  assert not np.array_equal(x[:, 4:], src[:, 4:])
  run = json.load(open(os.path.join(out, "run.json")))
  assert run["inpaint"]["mask"] == "top_half" and run["inpaint"]["repaint_resample"] == 2
  assert run["nfe"] == len(samplers.repaint_schedule(3, 2, 1)[0]) == 5
  assert generate(wd, out, **kw)["generated_this_run"] == 0  # resumes: nothing left to do
  with pytest.raises(SamplingError, match="inpaint"):
    generate(wd, out, **dict(kw, inpaint_mask="left_half"))  # another run into the same folder
  with pytest.raises(SamplingError, match="inpaint_mask"):
    generate(wd, str(tmp_path / "x"), **dict(kw, inpaint_mask=None))
  with pytest.raises(SamplingError, match="inpainting runs with"):
    generate(wd, str(tmp_path / "y"), **dict(kw, sampler="heun"))


@pytest.mark.slow
def test_bulk_and_sample_cli_with_captions_and_sr_inputs(tmp_path):
  """sample.py with --context (caption model) and an SR model's default held-out conditioning."""
  import subprocess
  import sys

  from helpers import ROOT

  from jaxdiff.bulk import generate, read_shard

  c = tiny_image_config()
  c.data.cond, c.model.num_classes = "caption", 0
  c.model.context_dim, c.model.context_vocab = 8, 15
  c.sample.num_steps, c.sample.guidance_scale = 3, 2.0
  wd = _workdir_with_random_weights(tmp_path / "caption", c)
  out = str(tmp_path / "gen")
  cmd = [
    sys.executable,
    os.path.join(ROOT, "sample.py"),
    f"--workdir={wd}",
    "--num_samples=4",
    f"--output={out}",
    "--context=3 thick slanted-right;7 thin",
    "--shard_size=4",
  ]
  subprocess.run(cmd, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True)
  run = json.load(open(os.path.join(out, "run.json")))
  assert run["context"] == "3 thick slanted-right;7 thin" and run["guidance_scale"] == 2.0
  c = tiny_image_config()
  c.data.cond, c.data.num_classes, c.model.num_classes, c.model.cond_channels = "sr", 0, 0, 1
  c.sample.num_steps = 3
  wd = _workdir_with_random_weights(tmp_path / "sr", c)
  summary = generate(wd, str(tmp_path / "sr_gen"), num_samples=3, shard_size=3, progress=False)
  assert summary["cond_source"]["source"] == "digits_test"
  assert read_shard(os.path.join(str(tmp_path / "sr_gen"), summary["files"][0]))["images"].shape == (
    3,
    8,
    8,
    1,
  )


@pytest.mark.slow
def test_super_resolution_beats_bicubic_after_a_short_run(tmp_path):
  """configs/digits_sr.py, shortened: after a few hundred steps a single DDIM sample per held-out digit
  is closer to the truth than bicubic upsampling of its 4x4 version."""
  from helpers import load_config_file

  from jaxdiff.bulk import restore_model
  from jaxdiff.config_sampling import sample_from_config
  from jaxdiff.data.derived_inputs import sr_input
  from jaxdiff.data.embedded import load_digits_split
  from jaxdiff.evaluation.conditional_metrics import super_resolution_errors
  from jaxdiff.training import train

  c = load_config_file("digits_sr")
  c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = 600, 600, 0
  c.train.compilation_cache_dir = "none"
  c.optim.warmup_steps = 100
  c.ema.decay = 0.99
  c.sample.num_steps = 25
  train(c, str(tmp_path / "sr"))
  config, model, schedule, params, _ = restore_model(str(tmp_path / "sr"))
  x, _ = load_digits_split("test")
  low, bicubic = sr_input(x, 2)
  samples = sample_from_config(config, model, schedule, params, jax.random.key(0), len(x), x_cond=bicubic)
  err = super_resolution_errors(np.asarray(samples), x, bicubic, low)
  assert err["mse"]["sample"] < err["mse"]["bicubic"], err["mse"]
  assert err["consistency_mse"]["sample"] < 0.5 * err["mse"]["bicubic"]


# ---------------------------------------------------------------- the Conditioning object


def test_conditioning_object_sampling_kwargs_and_dummies():
  from helpers import load_config_file

  from jaxdiff.config_utils import ConfigError

  labelled = Conditioning.from_config(tiny_image_config())
  assert (labelled.num_classes, labelled.context, labelled.x_cond) == (10, False, False)
  cond, uncond = labelled.sample_kwargs(3, [1, 2, 3])
  np.testing.assert_array_equal(cond["y"], [1, 2, 3])
  np.testing.assert_array_equal(uncond["y"], [10, 10, 10])  # the null class
  cond, uncond = labelled.sample_kwargs(2)
  np.testing.assert_array_equal(cond["y"], [10, 10]) and not uncond
  with pytest.raises(ValueError, match="no cross-attention"):
    labelled.sample_kwargs(2, context=np.zeros((2, 3), np.int32))
  with pytest.raises(ValueError, match="no conditioning image"):
    labelled.sample_kwargs(2, x_cond=np.zeros((2, 8, 8, 1)))
  x = jnp.zeros((2, 8, 8, 1))
  assert set(labelled.dummy_kwargs(x)) == {"y"}

  ctx = Conditioning.from_config(load_config_file("digits_context"))
  assert (ctx.num_classes, ctx.context_dim, ctx.context_vocab, ctx.context_dropout) == (0, 64, 15, 0.1)
  tokens = np.ones((2, 3), np.int32)
  cond, uncond = ctx.sample_kwargs(2, context=tokens)
  assert np.asarray(cond["context_mask"]).all() and not np.asarray(uncond["context_mask"]).any()
  assert set(uncond) == {"context_mask"}  # the context itself is shared
  cond, uncond = ctx.sample_kwargs(2)
  assert cond == {} and uncond == {}  # None: the null context
  kw = ctx.dummy_kwargs(x)
  assert kw["context"].shape == (2, 1) and kw["context"].dtype == jnp.int32

  sr = Conditioning.from_config(load_config_file("digits_sr"))
  xc = np.full((2, 8, 8, 1), 0.5, np.float32)
  cond, uncond = sr.sample_kwargs(2, x_cond=xc)
  assert set(cond) == {"x_cond"} and uncond == {}
  with pytest.raises(ValueError, match="pass x_cond"):
    sr.sample_kwargs(2)
  assert sr.dummy_kwargs(x)["x_cond"].shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(sr.train_kwargs({"x": x, "x_cond": xc}, jax.random.key(0))["x_cond"], xc)

  with pytest.raises(ConfigError, match="name='unet'"):
    Conditioning(context_dim=4, image_model=False).validate()
  with pytest.raises(ConfigError, match="context_vocab >= 15"):
    Conditioning(context_dim=8, context_vocab=10, data_cond="caption").validate({"context": 15})
  with pytest.raises(ConfigError, match="carry no conditioning image"):
    Conditioning(cond_channels=1).check_training_data({})
