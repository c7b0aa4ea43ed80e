"""The sampler interface, its registry, and what every sampler step sees.

A sampler is a small class: the options it takes (with defaults), its network evaluations per
step, what it supports, and `step`, which moves the state from one noise level to the next.
Levels are (alpha, sigma) pairs of any process, so each sampler works on every process.
Register a sampler (from inside or outside the package) with `register`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

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
  "static",
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


def lam(alpha, sigma):
  """log-SNR / 2 = log(alpha / sigma) (+inf at the clean end)."""
  return jnp.log(alpha) - jnp.log(sigma)


def ddim_update(alpha_next, sigma_next, x0, eps):
  """x at the next level with the same x0 and eps: alpha' x0 + sigma' eps (Euler in any frame)."""
  return alpha_next * x0 + sigma_next * eps


def static(default: Any) -> Any:
  """A structural option (an order, a name, a flag): part of the compiled program, so a new value
  compiles a new one. Options declared without it are traced (arguments of the program)."""
  return struct.field(pytree_node=False, default=default)


def _concrete(value: Any) -> float | None:
  """`value` as a Python float where it is a concrete number (Python, NumPy or a 0-d jax array),
  else None (a traced value, or a stand-in jax puts in a pytree's leaves)."""
  if isinstance(value, (bool, jax.core.Tracer)):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
    if np.issubdtype(np.asarray(value).dtype, np.number):
      return float(value)
  return None


def _shown(value: Any) -> str:
  return "a traced value" if isinstance(value, jax.core.Tracer) else repr(value)


class Sampler(struct.PyTreeNode):
  """One sampling method: a frozen `flax.struct` dataclass whose fields are its options.

  Subclass it, declare the options as fields with defaults, set the class attributes, implement
  `step`, then `register`. A field is traced (a leaf of the pytree: `jaxdiff.sample` passes its
  value into the compiled program, so a new value never compiles anew, and it may be a jax value
  under `jit`) unless declared `static(default)`, which makes it part of the program's structure.
  Options are keywords; one the sampler does not declare is refused with the list it takes.

  Class attributes:
    name: the registry name (`jaxdiff.sample(..., sampler=name)`).
    processes: the process classes it is defined on (None: every process).
    guidance: whether classifier-free guidance applies (the shared denoiser provides it).
    inpaint: whether RePaint-style inpainting may drive this sampler.
    finite_top: whether the first level must have alpha > 0 (capped at 2^-12 where a process
      reaches zero SNR, as diffusers does); False for samplers that handle alpha = 0 exactly.
    invertible: whether `jaxdiff.invert` may run it backwards (`check_invertible` refines it).
    stride_steps: DDIM's convention of stepping t -> t - T // n on leading/trailing grids.
    split_final: the last step is traced separately with `final=True` (Heun's last step is a
      plain Euler step and skips the second evaluation); otherwise every step runs in the scan
      with `final=False` and reads `inp.clean`.
    zero_programs: traced options whose value 0 has a program of its own (`is_zero`): ddim with
      eta = 0 draws no noise, euler with s_churn = 0 runs no churn. 0.3 and 0.5 share a program.
    options: option -> default, read from the fields (set by the class, not by you).
  """

  name: ClassVar[str] = ""
  processes: ClassVar[tuple[type, ...] | None] = None
  guidance: ClassVar[bool] = True
  inpaint: ClassVar[bool] = True
  invertible: ClassVar[bool] = False
  finite_top: ClassVar[bool] = True
  stride_steps: ClassVar[bool] = False
  split_final: ClassVar[bool] = False
  zero_programs: ClassVar[tuple[str, ...]] = ()
  options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

  # The zero_programs options that hold a concrete 0 (kept through jit, where their values are traced).
  _zeros: tuple[str, ...] | None = struct.field(pytree_node=False, default=None, kw_only=True)

  def __init_subclass__(cls, **kwargs: Any):
    for old in ("options", "traceable"):
      if old in cls.__dict__:
        raise TypeError(
          f"{cls.__name__}.{old}: declare a sampler's options as fields with defaults (`eta: float = 0.0`; "
          "`order: int = jaxdiff.samplers.static(2)` for one that shapes the program), not as a class attribute."
        )
    super().__init_subclass__(kw_only=True, repr=False, **kwargs)  # a frozen dataclass and a pytree
    cls.options = MappingProxyType({f.name: f.default for f in dataclasses.fields(cls) if f.name != "_zeros"})
    cls.replace = _replace  # flax's dataclass sets its own, which would keep stale zero flags

  def __new__(cls, *args: Any, **options: Any):
    if args:
      raise SamplingError(f"sampler {cls.name!r} takes its options by keyword; it takes: {_takes(cls)}.")
    _refuse_unknown(cls, set(options) - {"_zeros"})
    return super().__new__(cls)

  def __post_init__(self):
    fresh = self._zeros is None  # built by a caller, not rebuilt by jax from its leaves or by `replace`
    given = self._zeros or ()
    zeros = []
    for k in self.traced_options():
      value = getattr(self, k)
      number = _concrete(value)
      if number is not None and not isinstance(value, float):
        object.__setattr__(self, k, number)  # one dtype for every value: a Python float
      if k in self.zero_programs and (number == 0 if number is not None else k in given):
        zeros.append(k)
    object.__setattr__(self, "_zeros", tuple(zeros))
    if fresh:
      self._validate()

  def _validate(self) -> None:
    """The checks of a new sampler (not of one jax rebuilds: its leaves may be gradients, stand-ins)."""
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if (
        f.name != "_zeros" and not f.metadata.get("pytree_node", True) and isinstance(value, jax.core.Tracer)
      ):
        traced = ", ".join(self.traced_options()) or "none"
        raise SamplingError(
          f"sampler {self.name!r}: option {f.name} cannot be a traced value (under jit it must be a "
          f"Python value); the options that can be traced: {traced}."
        )
      if f.metadata.get("pytree_node", True) and isinstance(value, str):
        raise SamplingError(f"sampler {self.name!r}: option {f.name} must be a number, got {value!r}.")
    self.check_options()

  @classmethod
  def traced_options(cls) -> tuple[str, ...]:
    """The options that are leaves of the pytree (traced; new values share the compiled program)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("pytree_node", True))

  def is_zero(self, option: str) -> bool:
    """Whether `option` (one of `zero_programs`) is a concrete 0, which selects its simpler program."""
    return option in self._zeros

  def number(self, option: str) -> float | None:
    """The option's value as a Python float, or None where it is traced (for `check_options`)."""
    return _concrete(getattr(self, option))

  def check_scalars(self) -> None:
    """Refuse traced options that are not numbers or scalars (checked before a run is traced)."""
    for k in self.traced_options():
      v = getattr(self, k)
      if isinstance(v, (jax.Array, np.ndarray, np.generic)) and np.shape(v) != ():
        raise SamplingError(f"sampler {self.name!r}: option {k} must be a scalar, got shape {np.shape(v)}.")
      if not (isinstance(v, jax.core.Tracer) or _concrete(v) is not None):
        raise SamplingError(f"sampler {self.name!r}: option {k} must be a number, got {_shown(v)}.")

  def check_options(self) -> None:
    """Validate option values (override; `number(k)` is None for a traced value: skip it)."""

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
    """Whether the model's output carries learned-variance channels this sampler reads."""
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

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={_shown(getattr(self, k))}" for k in sorted(self.options))
    return f"{type(self).__name__}({opts})"


def _takes(cls: type[Sampler]) -> str:
  return ", ".join(sorted(cls.options)) or "no options"


def _refuse_unknown(cls: type[Sampler], names) -> None:
  unknown = sorted(set(names) - set(cls.options))
  if unknown:
    raise SamplingError(f"sampler {cls.name!r} does not take {', '.join(unknown)}; it takes: {_takes(cls)}.")


def _replace(self: Sampler, **updates: Any) -> Sampler:
  """A copy with the options in `updates` changed, checked as a new sampler's are."""
  _refuse_unknown(type(self), updates)
  kept = tuple(k for k in self._zeros if k not in updates)  # a traced new value is not known to be 0
  new = dataclasses.replace(self, _zeros=kept, **updates)
  new._validate()
  return new


Sampler.replace = _replace


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
