"""Tests of the networks' time input (networks take continuous time): the
``time_input`` / ``time_embedding`` fields of UNet, MLP and ``layers.TimeEmbedding``.

The defaults must be today's network bit for bit (parameter tree, embedding, outputs: golden
numbers recorded from the network before these fields existed); every time input must work under
jit with float ``t [B]``; "unit" must be "index" at 1000 t; "log_sigma" must resolve sigma over
EDM's [0.002, 80]; gradients must flow; invalid combinations must fail naming the field.
Networks are tiny and parameters are drawn in numpy (``helpers.random_params``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from jaxdiff.models.layers import (
  TIME_EMBEDDINGS,
  TIME_INPUTS,
  TimeEmbedding,
  check_time_embedding,
  fourier_embedding,
  time_features,
)
from jaxdiff.models.mlp import MLP
from jaxdiff.models.unet import UNet

pytestmark = pytest.mark.usefixtures("fast_compiles")

UNET = dict(
  base_channels=8,
  channel_mult=(1, 2),
  num_res_blocks=1,
  attention_resolutions=(4,),
  num_groups=4,
  num_heads=1,
)
SMALL_UNET = dict(
  base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(), num_groups=4
)
MLP_KW = dict(hidden_dim=16, num_layers=2)
CONTINUOUS = [(i, e) for i in TIME_INPUTS for e in ("sinusoidal", "fourier")]
# float times [B] of each kind: fractional timesteps, t in [0, 1], sigma in EDM's range
TIMES = {
  "index": np.array([0.0, 10.5, 999.0], np.float32),
  "unit": np.array([0.0, 0.3, 1.0], np.float32),
  "log_sigma": np.array([0.002, 1.0, 80.0], np.float32),
  "c_noise": np.array([0.002, 1.0, 80.0], np.float32),
}
# Recorded from the networks at commit 638b0b1 (before time_input / fourier existed), from the
# inputs of test_defaults_same_tree_embedding_and_outputs_as_before: helpers.random_params
# (seed 0), images() / points(), t = TIMES["index"], labels [0, 1, 3] for the UNet.
GOLDEN = dict(
  unet_params=45097,
  mlp_params=2354,
  unet_out=[[-0.0833017081, -0.3707966805], [-0.2615884244, -0.0638838112], [0.1109415963, 0.0227386765]],
  unet_abs_sum=87.2539825439,
  mlp_out=[[1.2724071741, -0.8833909630], [0.0392877012, -1.1566323042], [1.0447529554, -1.3509850502]],
)


def sinusoid(x, dim):
  """DDPM's sinusoidal embedding written out independently (float64): sin then cos of x * f_i,
  f_i = 10000^(-i / (half - 1))."""
  half = dim // 2
  f = 10000.0 ** (-np.arange(half) / (half - 1))
  a = np.asarray(x, np.float64)[:, None] * f[None]
  return np.concatenate([np.sin(a), np.cos(a)], axis=1)


def fourier(x, dim, scale=16.0):
  """Gaussian random Fourier features written out independently: w = scale * N(0, 1) from
  NumPy's legacy RandomState(0) stream, then sin, cos of 2 pi w x."""
  w = scale * np.random.RandomState(0).standard_normal(dim // 2)
  a = 2 * math.pi * np.asarray(x, np.float64)[:, None] * w[None]
  return np.concatenate([np.sin(a), np.cos(a)], axis=1)


def shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def images(batch=3):
  return jnp.asarray(np.random.RandomState(1).standard_normal((batch, 8, 8, 1)), jnp.float32)


def points(batch=3):
  return jnp.asarray(np.random.RandomState(2).standard_normal((batch, 2)), jnp.float32)


# ---------------------------------------------------------------- the defaults are today's network


def test_choices_exported_and_defaults():
  assert TIME_INPUTS == ("index", "unit", "log_sigma", "c_noise")
  assert set(TIME_EMBEDDINGS) == {"sinusoidal", "learned", "fourier"}
  for module in (UNet(), MLP(), TimeEmbedding(8, 16)):
    assert module.time_input == "index" and module.time_embedding == "sinusoidal"


def test_defaults_same_tree_embedding_and_outputs_as_before():
  """Golden numbers from the networks before the time fields existed (commit 638b0b1): the
  parameter count and outputs; the time embedding against the formula written out here."""
  t = jnp.asarray(TIMES["index"])
  unet, mlp = UNet(**UNET, num_classes=3), MLP(**MLP_KW)
  y = jnp.array([0, 1, 3])
  pu, pm = random_params(unet, images(), t, y), random_params(mlp, points(), t)
  assert shapes(pu["params"]["time_embed"]) == {
    "dense_0": {"kernel": (8, 32), "bias": (32,)},
    "dense_1": {"kernel": (32, 32), "bias": (32,)},
  }
  assert shapes(pm["params"]["time_embed"]) == {
    "dense_0": {"kernel": (16, 16), "bias": (16,)},
    "dense_1": {"kernel": (16, 16), "bias": (16,)},
  }
  count = lambda p: sum(a.size for a in jax.tree_util.tree_leaves(p))
  assert (count(pu), count(pm)) == (GOLDEN["unet_params"], GOLDEN["mlp_params"])

  @jax.jit
  def run(pu, pm):
    ou, inter = unet.apply(pu, images(), t, y, capture_intermediates=True)
    return ou, inter["intermediates"]["time_embed"]["__call__"][0], mlp.apply(pm, points(), t)

  ou, emb, om = map(np.asarray, run(pu, pm))
  # The embedding MLP on the independently written sinusoid.
  d0, d1 = pu["params"]["time_embed"]["dense_0"], pu["params"]["time_embed"]["dense_1"]
  h = sinusoid(TIMES["index"], 8) @ np.asarray(d0["kernel"], np.float64) + np.asarray(d0["bias"])
  h = h / (1 + np.exp(-h))
  want = h @ np.asarray(d1["kernel"], np.float64) + np.asarray(d1["bias"])
  np.testing.assert_allclose(emb, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ou[:, :2, 0, 0], GOLDEN["unet_out"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.abs(ou).sum(), GOLDEN["unet_abs_sum"], rtol=1e-4)
  np.testing.assert_allclose(om, GOLDEN["mlp_out"], rtol=1e-4, atol=1e-5)


def test_index_embedding_is_the_sinusoid_bit_for_bit():
  from jaxdiff.models.layers import timestep_embedding

  t = jnp.asarray(TIMES["index"])
  np.testing.assert_array_equal(time_features(t, 10), timestep_embedding(t, 10))
  np.testing.assert_allclose(time_features(t, 10), sinusoid(TIMES["index"], 10), atol=2e-4)


# ---------------------------------------------------------------- every time input, float t, jit


def test_unet_every_time_input_under_jit():
  """All continuous choices share the default's parameter tree (a checkpoint's layout does not
  depend on them) and run under jit on float t [B]; the output depends on t."""
  x = images()
  base = random_params(UNet(**UNET), x, jnp.asarray(TIMES["index"]))
  for ti, te in CONTINUOUS:
    v = jax.eval_shape(
      lambda: UNet(**UNET, time_input=ti, time_embedding=te).init(jax.random.key(0), x, TIMES[ti])
    )
    assert set(v) == {"params"} and shapes(v) == shapes(base), (ti, te)

  x2 = jnp.concatenate([x, x])  # the same images at t and at the times rolled by one
  small = random_params(UNet(**SMALL_UNET), x2, jnp.zeros(6))

  @jax.jit
  def run(p):
    out = {}
    for ti, te in CONTINUOUS:
      t = jnp.asarray(TIMES[ti])
      out[ti, te] = UNet(**SMALL_UNET, time_input=ti, time_embedding=te).apply(
        p, x2, jnp.concatenate([t, jnp.roll(t, 1)])
      )
    return out

  for key, out in run(small).items():
    out = np.asarray(out)
    assert out.shape == (6, 8, 8, 1) and out.dtype == np.float32 and np.isfinite(out).all(), key
    assert min(rel(out[i], out[i + 3]) for i in range(3)) > 1e-3, key  # each example sees its time


def test_mlp_every_time_input_under_jit():
  x = points()
  base = random_params(MLP(**MLP_KW), x, jnp.asarray(TIMES["index"]))

  @jax.jit
  def run(p):
    out = {}
    for ti, te in CONTINUOUS:
      m = MLP(**MLP_KW, time_input=ti, time_embedding=te)
      t = jnp.asarray(TIMES[ti])
      out[ti, te] = (m.apply(p, x, t), m.apply(p, x, jnp.roll(t, 1)))
    return out

  for key, (a, b) in run(base).items():
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == (3, 2) and np.isfinite(a).all(), key
    assert min(rel(a[i], b[i]) for i in range(3)) > 1e-3, key


def test_unit_is_index_at_1000_t():
  t = jnp.asarray(np.linspace(0, 1, 7), jnp.float32)
  t1000 = t * 1000
  np.testing.assert_array_equal(time_features(t, 16, "unit"), time_features(t1000, 16, "index"))
  np.testing.assert_allclose(
    time_features(t, 16, "unit", "fourier"), time_features(t1000, 16, "index", "fourier"), atol=1e-4
  )
  x = points(7)
  p = random_params(MLP(**MLP_KW), x, t)
  unit, index = MLP(**MLP_KW, time_input="unit"), MLP(**MLP_KW)
  a, b = jax.jit(lambda p: (unit.apply(p, x, t), index.apply(p, x, t1000)))(p)
  np.testing.assert_array_equal(a, b)


def test_fourier_features_are_fixed_and_match_the_formula():
  c = np.log(np.array([0.002, 0.5, 80.0])) / 4
  got = np.asarray(fourier_embedding(jnp.asarray(c, jnp.float32), 9))
  assert got.shape == (3, 9)
  np.testing.assert_array_equal(got[:, 8], 0.0)  # odd width: a zero column
  np.testing.assert_allclose(got[:, :8], fourier(c, 8), atol=5e-4)
  got = np.asarray(time_features(jnp.array([0.002, 0.5, 80.0]), 8, "log_sigma", "fourier"))
  np.testing.assert_allclose(got, fourier(c, 8), atol=5e-4)  # NCSN++ of EDM: scale 16 on c_noise
  got = np.asarray(time_features(jnp.array([0.002, 0.5, 80.0]), 8, "log_sigma", "fourier", fourier_scale=1.0))
  np.testing.assert_allclose(got, fourier(c, 8, scale=1.0), atol=1e-5)


# ---------------------------------------------------------------- log_sigma resolves sigma


@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
def test_log_sigma_resolves_sigma(embedding):
  dim = 16  # the tiny MLP's width: 8 frequencies
  sig = np.geomspace(0.002, 80 / 1.1, 25).astype(np.float32)
  e = lambda s: np.asarray(time_features(jnp.asarray(s, jnp.float32), dim, "log_sigma", embedding))
  scale = math.sqrt(dim // 2)  # |embedding| (each frequency is a unit (sin, cos) pair)
  near = np.linalg.norm(e(sig) - e(sig * 1.1), axis=1) / scale
  assert near.min() > 0.5, near.min()  # sigmas 10% apart: clearly different everywhere
  ends = e(np.array([0.002, 1.0, 80.0]))
  for i, j in ((0, 1), (1, 2), (0, 2)):
    assert np.linalg.norm(ends[i] - ends[j]) / scale > 0.5
  if embedding == "sinusoidal":  # EDM's DDPM++ (c_noise unscaled, top frequency 1) is 50x weaker
    c = lambda s: np.log(s) / 4
    weak = np.linalg.norm(sinusoid(c(sig), dim) - sinusoid(c(sig * 1.1), dim), axis=1) / scale
    assert near.min() > 50 * weak.max()
    # c_noise enters the sinusoid as 1000 c_noise
    np.testing.assert_allclose(e(sig), sinusoid(1000 * c(sig.astype(np.float64)), dim), atol=2e-3)
  assert np.isfinite(e(np.array([0.0], np.float32))).all()  # sigma = 0 (dummy init inputs) is finite


def test_c_noise_feeds_the_sinusoid_ln_sigma_over_4_unscaled():
  """diffusers' EDM schedulers give UNet2DModel c_noise = ln(sigma) / 4 as its timestep."""
  sig = np.array([0.002, 0.3, 1.0, 80.0], np.float32)
  got = np.asarray(time_features(jnp.asarray(sig), 16, "c_noise"))
  np.testing.assert_allclose(got, sinusoid(np.log(sig.astype(np.float64)) / 4, 16), atol=1e-6)
  fourier_got = np.asarray(time_features(jnp.asarray(sig), 16, "c_noise", "fourier"))
  np.testing.assert_array_equal(
    fourier_got, np.asarray(time_features(jnp.asarray(sig), 16, "log_sigma", "fourier"))
  )


def test_log_sigma_output_changes_with_sigma():
  x = points(4)
  m = MLP(**MLP_KW, time_input="log_sigma")
  p = random_params(m, x, jnp.ones(4))
  sig = jnp.array([0.002, 0.1, 1.0, 80.0])
  a, b, c = jax.jit(lambda p: (m.apply(p, x, sig), m.apply(p, x, sig * 1.1), m.apply(p, x, sig[::-1])))(p)
  a, b, c = map(np.asarray, (a, b, c))
  assert min(rel(a[i], b[i]) for i in range(4)) > 1e-2
  assert min(rel(a[i], c[i]) for i in range(4)) > 1e-2


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("time_input", ["unit", "log_sigma"])
def test_gradients_flow(time_input):
  """Through the time embedding's parameters and into the (continuous) time itself."""
  x = points()
  m = MLP(**MLP_KW, time_input=time_input, time_embedding="fourier" if time_input == "unit" else "sinusoidal")
  t = jnp.array([0.1, 0.3, 0.9]) if time_input == "unit" else jnp.asarray(TIMES[time_input])
  p = random_params(m, x, t)
  loss = lambda p, t: jnp.sum(m.apply(p, x, t) ** 2)
  gp, gt = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, t)
  for leaf in jax.tree_util.tree_leaves(gp["params"]["time_embed"]):
    assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0
  gt = np.asarray(gt)
  assert gt.shape == (3,) and np.isfinite(gt).all() and (np.abs(gt) > 0).all()


def test_unet_gradients_reach_the_time_embedding():
  x, t = images(), jnp.asarray(TIMES["log_sigma"])
  m = UNet(**SMALL_UNET, time_input="log_sigma")
  p = random_params(m, x, t)
  g = jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, x, t) ** 2)))(p)
  for leaf in jax.tree_util.tree_leaves(g["params"]["time_embed"]):
    assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0


# ---------------------------------------------------------------- invalid combinations


@pytest.mark.parametrize(
  "build, field",
  [
    (lambda: MLP(time_input="sigma"), "model.time_input"),
    (lambda: UNet(time_input="seconds"), "model.time_input"),
    (lambda: MLP(time_embedding="positional"), "model.time_embedding"),
    (lambda: UNet(time_embedding="learned"), "model.time_embedding"),
    (
      lambda: MLP(time_embedding="learned", time_input="unit"),
      "model.time_embedding='learned'.*model.time_input",
    ),
    (lambda: MLP(time_embedding="learned", time_input="log_sigma"), "model.time_input"),
    (lambda: TimeEmbedding(8, 16, time_input="log_sigma", time_embedding="learned"), "model.time_embedding"),
    (lambda: check_time_embedding("unit", "learned"), "model.time_input='unit'"),
  ],
)
def test_invalid_combinations_name_the_field(build, field):
  with pytest.raises(ValueError, match=field):
    build()


def test_learned_index_table_still_accepted():
  check_time_embedding("index", "learned")
  m = MLP(hidden_dim=4, num_layers=1, time_embedding="learned", num_timesteps=10)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,))))
  assert shapes(v["params"]["time_embed"]) == {"embedding": (10, 4)}
