"""The sampler interface, its registry, and what every sampler step sees.

A sampler is a small class: the options it takes (with defaults), its network evaluations per
step, what it supports, and `step`, which moves the state from one noise level to the next.
Levels are (alpha, sigma) pairs of any process, so each sampler works on every process.
Register a sampler (from inside or outside the package) with `register`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import SamplingError

__all__ = [
  "Sampler",
  "StepInput",
  "State",
  "Denoised",
  "Context",
  "register",
  "get",
  "available",
  "SAMPLERS",
  "INPAINT_SAMPLERS",
  "NOISE_STREAM_STEP",
  "NOISE_STREAM_CHURN",
  "TRACED",
  "is_traced",
]

# Named random streams folded into the sampler's step key (the step index is folded in after).
NOISE_STREAM_STEP = None  # the step noise uses fold_in(step_key, i) directly
NOISE_STREAM_CHURN = 1


class StepInput(NamedTuple):
  """What one step sees: the current level and the level it lands on (its scan input)."""

  index: jnp.ndarray  # noise index (the iteration number)
  t: jnp.ndarray  # the model time at the current level
  t_next: jnp.ndarray  # the model time at the next level (unused at the clean end)
  alpha: jnp.ndarray
  sigma: jnp.ndarray
  alpha_next: jnp.ndarray
  sigma_next: jnp.ndarray
  max_order: jnp.ndarray  # the highest multistep order allowed at this step
  restart: jnp.ndarray  # True where the multistep history is void (first step, after a RePaint jump)
  clean: jnp.ndarray  # True where the step lands on clean data (alpha' = 1, sigma' = 0)
  extra: Mapping[str, jnp.ndarray]  # a sampler's own per-step arrays (`Sampler.prepare`)


class State(NamedTuple):
  """The sampling state: x at the current level, the last x0 prediction, the sampler's own carry."""

  x: jnp.ndarray
  x0: jnp.ndarray
  aux: Any


class Denoised(NamedTuple):
  x0: jnp.ndarray
  eps: jnp.ndarray
  extra: jnp.ndarray | None  # learned-variance channels, when the sampler asks for them
  model_eps: jnp.ndarray | None = None  # eps before clip_x0 (the model's own; = eps without clipping)


class Context(NamedTuple):
  """What a step may call: the denoiser, the process, the noise source, static settings.

  `at_step` (None for most runs) makes the denoiser of one step from that step's inputs (a
  per-step guidance scale); the loops call `for_step(inp)` before each step.
  """

  denoise: Callable[..., Denoised]  # (x, t, alpha, sigma, x_self_cond) -> Denoised
  process: Any
  key: jax.Array
  integer_times: bool
  at_step: Callable[[StepInput], Callable[..., Denoised]] | None = None
  dtype: Any = "float32"  # the run's float dtype (float64 for a float64 x_init under jax_enable_x64)

  def for_step(self, inp: StepInput) -> Context:
    """This context with the denoiser of step `inp` (itself when the denoiser is the same for all)."""
    return self if self.at_step is None else self._replace(denoise=self.at_step(inp))

  def noise(self, index, shape, stream: int | None = NOISE_STREAM_STEP) -> jnp.ndarray:
    key = self.key if stream is None else jax.random.fold_in(self.key, stream)
    return jax.random.normal(jax.random.fold_in(key, index), shape, self.dtype)


class _Traced:
  """Stands in a Sampler's options for a value traced under jit (the value itself goes through
  the compiled program as an argument; the sampler object stays hashable and static)."""

  def __repr__(self) -> str:
    return "<traced>"

  def __hash__(self) -> int:
    return hash("jaxdiff.samplers.TRACED")

  def __eq__(self, other) -> bool:
    return isinstance(other, _Traced)


TRACED = _Traced()


def is_traced(value: Any) -> bool:
  return isinstance(value, (_Traced, jax.core.Tracer))


def lam(alpha, sigma):
  """log-SNR / 2 = log(alpha / sigma) (+inf at the clean end)."""
  return jnp.log(alpha) - jnp.log(sigma)


def ddim_update(alpha_next, sigma_next, x0, eps):
  """x at the next level with the same x0 and eps: alpha' x0 + sigma' eps (Euler in any frame)."""
  return alpha_next * x0 + sigma_next * eps


class Sampler:
  """One sampling method. Subclass, set the class attributes, implement `step`, then `register`.

  Class attributes:
    name: the registry name (`jaxdiff.sample(..., sampler=name)`).
    options: option -> default; an option not listed here is refused with their list.
    processes: the process classes it is defined on (None: every process).
    guidance: whether classifier-free guidance applies (the shared denoiser provides it).
    inpaint: whether RePaint-style inpainting may drive this sampler.
    finite_top: whether the first level must have alpha > 0 (capped at 2^-12 where a process
      reaches zero SNR, as diffusers does); False for samplers that handle alpha = 0 exactly.
    traceable: the float options that may be jax values traced under `jit` (e.g. `eta`); the
      sampler then keeps `TRACED` in `opts` and `sample` passes the value into the program.
    invertible: whether `jaxdiff.invert` may run it backwards (`check_invertible` refines it).
    stride_steps: DDIM's convention of stepping t -> t - T // n on leading/trailing grids.
    split_final: the last step is traced separately with `final=True` (Heun's last step is a
      plain Euler step and skips the second evaluation); otherwise every step runs in the scan
      with `final=False` and reads `inp.clean`.
  """

  name: ClassVar[str] = ""
  options: ClassVar[Mapping[str, Any]] = {}
  processes: ClassVar[tuple[type, ...] | None] = None  # the process classes it runs on (None: all)
  guidance: ClassVar[bool] = True  # classifier-free guidance (the denoiser does it for every sampler)
  inpaint: ClassVar[bool] = True
  traceable: ClassVar[tuple[str, ...]] = ()
  invertible: ClassVar[bool] = False
  finite_top: ClassVar[bool] = True
  stride_steps: ClassVar[bool] = False
  split_final: ClassVar[bool] = False

  def __init__(self, **options: Any):
    unknown = sorted(set(options) - set(self.options))
    if unknown:
      takes = ", ".join(sorted(self.options)) or "no options"
      raise SamplingError(f"sampler {self.name!r} does not take {', '.join(unknown)}; it takes: {takes}.")
    self.opts = {**self.options, **options}
    self.traced: dict[str, Any] = {}
    for k, v in options.items():
      if isinstance(v, jax.core.Tracer):
        if k not in self.traceable:
          takes = ", ".join(self.traceable) or "none"
          raise SamplingError(
            f"sampler {self.name!r}: option {k} cannot be a traced value (under jit it must be a "
            f"Python value); the options that can be traced: {takes}."
          )
        if v.shape != ():
          raise SamplingError(f"sampler {self.name!r}: option {k} must be a scalar, got shape {v.shape}.")
        self.traced[k], self.opts[k] = v, TRACED
      elif k in self.traceable and not isinstance(v, bool) and np.ndim(v) == 0 and hasattr(v, "dtype"):
        self.opts[k] = float(v)  # a concrete jax / numpy scalar: a Python float, as before
    self.check_options()

  def check_options(self) -> None:
    """Validate option values (override; values in `traceable` may be `TRACED`: skip those)."""

  def with_values(self, values: Mapping[str, Any]) -> Sampler:
    """A copy whose options hold `values` (the traced ones, inside the compiled program)."""
    if not values:
      return self
    new = copy.copy(self)
    new.opts = {**self.opts, **values}
    new.traced = {}
    return new

  def check_invertible(self) -> None:
    """Refuse to run backwards (`jaxdiff.invert`) where the method is stochastic or not invertible."""
    if not self.invertible:
      raise SamplingError(
        f"sampler {self.name!r} cannot be inverted (it is stochastic or has no reverse step); "
        "invert with ddim (eta=0), euler or heun (s_churn=0), dpmpp_2m or dpmpp_3m."
      )

  def caps_top(self, process: Any) -> bool:
    """Whether this sampler (with these options, on this process) divides by alpha or needs a
    finite log-SNR at the first level (then a zero-SNR top is capped, see `finite_top`)."""
    return self.finite_top

  def check_process(self, process: Any) -> None:
    """Refuse processes this sampler is not defined on (`processes`; override for finer checks)."""
    if self.processes is not None and not isinstance(process, self.processes):
      names = ", ".join(c.__name__ for c in self.processes)
      raise SamplingError(f"sampler {self.name!r} runs on {names}, not {type(process).__name__}.")

  @property
  def uses_variance(self) -> bool:
    return False

  def nfe(self, num_steps: int) -> int:
    """Network evaluations of a run of num_steps steps."""
    return int(num_steps)

  def max_orders(self, num_steps: int) -> np.ndarray:
    """The highest multistep order per step (static)."""
    return np.ones(num_steps, np.int32)

  def prepare(self, alpha, sigma, alpha_next, sigma_next) -> dict[str, jnp.ndarray]:
    """Per-step arrays computed once from all levels (e.g. DDPM's clipped log variance)."""
    return {}

  def init(self, x: jnp.ndarray) -> Any:
    """The sampler's own carry at the start (e.g. the multistep history)."""
    return ()

  def step(self, ctx: Context, state: State, inp: StepInput, final: bool) -> tuple[State, jnp.ndarray]:
    """Move `state` from level inp.(alpha, sigma) to inp.(alpha_next, sigma_next); return (state, x0)."""
    raise NotImplementedError

  def _key(self):
    return (type(self), tuple(sorted((k, _hashable(v)) for k, v in self.opts.items())))

  def __hash__(self) -> int:
    return hash(self._key())

  def __eq__(self, other) -> bool:
    return isinstance(other, Sampler) and self._key() == other._key()

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.opts.items()))
    return f"{type(self).__name__}({opts})"


def _hashable(v):
  if isinstance(v, (list, tuple)):
    return tuple(_hashable(x) for x in v)
  if isinstance(v, dict):
    return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
  return v


_REGISTRY: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler] | None = None, *, name: str | None = None, replace: bool = False):
  """Add a Sampler subclass to the registry (usable as a decorator); returns the class."""

  def add(c: type[Sampler]) -> type[Sampler]:
    if not (isinstance(c, type) and issubclass(c, Sampler)):
      raise TypeError(f"register takes a subclass of jaxdiff.samplers.Sampler, got {c!r}.")
    key = name or c.name
    if not key:
      raise SamplingError(f"{c.__name__} has no `name`: set the class attribute or pass name=.")
    if key in _REGISTRY and _REGISTRY[key] is not c and not replace:
      raise SamplingError(f"a sampler named {key!r} is already registered; pass replace=True to override it.")
    _REGISTRY[key] = c
    return c

  return add if cls is None else add(cls)


def get(name: str) -> type[Sampler]:
  """The registered Sampler class of that name."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise SamplingError(f"Unknown sampler {name!r}; choose one of {tuple(_REGISTRY)}.") from None


def _put_first(names: Sequence[str]) -> None:
  """Order the registry's listing: these built-in names first, the rest as registered."""
  order = [n for n in names if n in _REGISTRY] + [n for n in _REGISTRY if n not in names]
  items = {n: _REGISTRY[n] for n in order}
  _REGISTRY.clear()
  _REGISTRY.update(items)


def available() -> tuple[str, ...]:
  return tuple(_REGISTRY)


class _Names(Sequence):
  """A live, read-only view of registered sampler names (optionally only those that inpaint)."""

  def __init__(self, inpaint_only: bool = False):
    self._inpaint_only = inpaint_only

  def _names(self) -> tuple[str, ...]:
    return tuple(n for n, c in _REGISTRY.items() if c.inpaint or not self._inpaint_only)

  def __getitem__(self, i):
    return self._names()[i]

  def __len__(self) -> int:
    return len(self._names())

  def __iter__(self) -> Iterator[str]:
    return iter(self._names())

  def __contains__(self, name) -> bool:
    return name in self._names()

  def __eq__(self, other) -> bool:
    return tuple(self) == tuple(other) if isinstance(other, (tuple, list, _Names)) else NotImplemented

  def __hash__(self) -> int:
    return hash(self._names())

  def __repr__(self) -> str:
    return repr(self._names())


SAMPLERS = _Names()
INPAINT_SAMPLERS = _Names(inpaint_only=True)
