"""`jaxdiff.invert` against exact solutions: on Gaussian data N(MU, SD^2) the denoiser is closed form and
the probability-flow ODE maps x0 to alpha_0 MU + (x0 - MU) sqrt(alpha_0^2 SD^2 + sigma_0^2) / SD at the
first grid time. Inversion must approach that map, and sampling from its result must give x0 back, with
errors that shrink as the steps do, on every process and every invertible sampler."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import diffusion, processes, samplers, schedules

MU, SD = 0.5, 0.3
PROCESSES = {
  "vp": (schedules.linear(1000), "eps"),
  "vpsde": (processes.VPSDE(), "v"),
  "cosine": (processes.CosineVP(), "x0"),
  "edm": (processes.EDM(), "edm"),
  "flow": (processes.RectifiedFlow(), "flow"),
}
INVERTIBLE = ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m")
X0 = MU + SD * jax.random.normal(jax.random.key(1), (32, 2))


def exact_model(process, prediction):
  """model_fn(x, t) of the exact denoiser of N(MU, SD^2) data, as a network of `prediction` would output
  it (with "edm" it receives c_in x / alpha and returns F)."""
  proc = processes.as_process(process)
  sd = float(getattr(proc, "sigma_data", 0.5))

  def fn(x, t):
    a, s = proc.alpha_sigma(t)
    a, s = a[:, None], s[:, None]
    if prediction == "edm":
      x = a * x * jnp.sqrt((s / a) ** 2 + sd**2)
    v = a * a * SD**2 + s * s
    x0, eps = MU + a * SD**2 / v * (x - a * MU), s * (x - a * MU) / v
    return diffusion.join_output(prediction, x0, eps, a, s, x_t=x, sigma_data=sd)

  return fn


def exact_map(process, sampler, n, x0):
  """Where the probability-flow ODE takes x0 at the grid's first time."""
  proc = processes.as_process(process)
  t0 = samplers.plan_grid(proc, samplers.make_sampler(sampler), n).ts[0]
  a, s = (float(v) for v in proc.alpha_sigma(np.float32(t0)))
  return a * MU + (np.asarray(x0, np.float64) - MU) * np.sqrt(a * a * SD**2 + s * s) / SD


def errors(name, sampler, n):
  """(round trip max error, max error against the exact map relative to its scale)."""
  process, prediction = PROCESSES[name]
  model = exact_model(process, prediction)
  kw = dict(sampler=sampler, num_steps=n, prediction=prediction)
  xT = jaxdiff.invert(model, process, X0, **kw)
  back = jaxdiff.sample(model, process, X0.shape, jax.random.key(0), x_init=xT, **kw)
  want = exact_map(process, sampler, n, X0)
  rel = np.abs(np.asarray(xT) - want).max() / np.abs(want).max()
  return float(np.abs(np.asarray(back) - np.asarray(X0)).max()), float(rel)


@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("sampler", INVERTIBLE)
def test_round_trip_and_exact_map_errors_shrink(name, sampler):
  rt10, ex10 = errors(name, sampler, 10)
  rt80, ex80 = errors(name, sampler, 80)
  # the inversion converges to the exact map at least at first order (8x the steps: error / 5)
  assert ex80 < ex10 / 5, (ex10, ex80)
  assert ex80 < 0.1, ex80
  # the round trip inherits the sampler's own error as well; it shrinks too
  assert rt80 < rt10 / 2, (rt10, rt80)
  assert rt80 < 0.15, rt80


def test_second_order_inversions_converge_faster():
  """Heun's reversed steps converge at second order on the exact map; DDIM's at first."""
  _, d20 = errors("edm", "ddim", 20)
  _, d40 = errors("edm", "ddim", 40)
  _, h20 = errors("edm", "heun", 20)
  _, h40 = errors("edm", "heun", 40)
  assert 1.6 < d20 / d40 < 2.5, d20 / d40
  assert h20 / h40 > 3.2, h20 / h40


def test_strided_and_user_grids():
  """DDIM's t -> t - T/n steps on a trailing chain, and a user's ts, invert like the default grid."""
  process, prediction = PROCESSES["vp"]
  model = exact_model(process, prediction)
  for kw in (dict(spacing="trailing"), dict(ts=np.linspace(998.5, 0.0, 40)[:-1] + 0.5)):
    xT = jaxdiff.invert(model, process, X0, num_steps=None, prediction=prediction, **kw)
    back = jaxdiff.sample(model, process, X0.shape, jax.random.key(0), prediction=prediction, x_init=xT, **kw)
    assert np.abs(np.asarray(back) - np.asarray(X0)).max() < 0.3


def test_guided_inversion_round_trip_and_one_scan_under_jit():
  def model(x, t, y=None):
    return exact_model(*PROCESSES["flow"])(x, t) + 0.05 * y[:, None].astype(jnp.float32)

  process = PROCESSES["flow"][0]
  b = X0.shape[0]
  kw = dict(
    sampler="heun",
    num_steps=40,
    prediction="flow",
    cond={"y": jnp.arange(b) % 3},
    uncond={"y": jnp.full((b,), 3)},
    guidance_scale=2.0,
  )
  fn = jax.jit(lambda x: jaxdiff.invert(model, process, x, **kw))
  xT = fn(X0)
  np.testing.assert_allclose(np.asarray(xT), np.asarray(jaxdiff.invert(model, process, X0, **kw)), atol=1e-5)
  back = jaxdiff.sample(model, process, X0.shape, jax.random.key(0), x_init=xT, **kw)
  assert np.abs(np.asarray(back) - np.asarray(X0)).max() < 1e-2
  jaxpr = str(jax.make_jaxpr(lambda x: jaxdiff.invert(model, process, x, **kw))(X0))
  assert len(re.findall(r"\bscan\[", jaxpr)) == 1  # the whole inversion is one scan (+ the clean step)


def test_nfe_equals_sampling():
  calls = []

  def model(x, t):
    calls.append(1)
    return exact_model(*PROCESSES["edm"])(x, t)

  for sampler, per_body in (("ddim", 1), ("heun", 2), ("dpmpp_2m", 1)):
    calls.clear()
    jax.make_jaxpr(
      lambda x: jaxdiff.invert(model, processes.EDM(), x, sampler=sampler, num_steps=8, prediction="edm")
    )(X0)
    assert len(calls) == 1 + per_body  # the clean step, then the scan body traced once


@pytest.mark.parametrize(
  "sampler, options, message",
  [
    ("ddpm", {}, "sampler 'ddpm' cannot be inverted"),
    ("euler_ancestral", {}, "cannot be inverted"),
    ("dpmpp_2m_sde", {}, "cannot be inverted"),
    ("unipc", {}, "cannot be inverted"),
    ("ddim", {"eta": 0.5}, "ddim with eta=0.5 is stochastic"),
    ("euler", {"s_churn": 1.0}, "euler with s_churn=1.0 is stochastic"),
    ("heun", {"s_churn": 1.0}, "heun with s_churn=1.0 is stochastic"),
  ],
)
def test_stochastic_samplers_are_refused(sampler, options, message):
  with pytest.raises(ValueError, match=message):
    jaxdiff.invert(
      exact_model(*PROCESSES["vp"]),
      PROCESSES["vp"][0],
      X0,
      sampler=sampler,
      num_steps=5,
      prediction="eps",
      **options,
    )


def test_traced_eta_is_refused_and_shapes_are_checked():
  with pytest.raises(ValueError, match="cannot be inverted"):
    jax.jit(
      lambda eta: jaxdiff.invert(
        exact_model(*PROCESSES["vp"]), PROCESSES["vp"][0], X0, num_steps=5, prediction="eps", eta=eta
      )
    )(0.0)
  with pytest.raises(ValueError, match=r"shape must be \(batch"):
    jaxdiff.invert(exact_model(*PROCESSES["vp"]), PROCESSES["vp"][0], X0[0], num_steps=5, prediction="eps")
  with pytest.raises(ValueError, match=r"cond\['y'\] has shape \(3,\)"):
    jaxdiff.invert(
      lambda x, t, y=None: x, PROCESSES["vp"][0], X0, num_steps=5, prediction="eps", cond={"y": jnp.zeros(3)}
    )


def test_readme_inversion_snippet_runs():
  from helpers import documented_text

  text = documented_text()  # README.md and the guides (docs/guides/functional-api.md)
  block = re.search(r"<!-- invert snippet -->\s*```python\n(.*?)```", text, re.S).group(1)
  scope: dict = {}
  exec(compile(block, "README.md", "exec"), scope)
  assert float(scope["err"]) < 0.05


def test_readme_round_trip_figures_are_what_the_exact_model_gives():
  """The round-trip errors the README quotes for EDM's Karras grid (ddim and heun at 10 / 20 / 40 steps)
  are `errors()`'s, to the digits shown (`-s` prints them)."""
  from helpers import documented_text

  text = " ".join(documented_text().split())  # README.md and the guides
  num = r"([0-9.]+(?:e-?[0-9]+)?)"
  m = re.search(
    rf"round-trip max error at 10 / 20 / 40 steps: ddim {num} / {num} / {num}, heun {num} / {num} / {num}",
    text,
  )
  assert m, "README no longer quotes the round-trip errors: update this test with it"
  quoted = [float(v) for v in m.groups()]
  got = [errors("edm", sampler, n)[0] for sampler in ("ddim", "heun") for n in (10, 20, 40)]
  ddim, heun = (" / ".join(f"{v:.2g}" for v in got[i : i + 3]) for i in (0, 3))
  print(f"round-trip max error at 10 / 20 / 40 steps: ddim {ddim}, heun {heun}")
  for q, g in zip(quoted, got):
    assert g == pytest.approx(q, rel=0.06), (quoted, got)
