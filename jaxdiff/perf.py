"""CPU / XLA performance settings.

Two mechanisms:

* ``cpu_compiler_options()``: XLA options that jaxdiff passes to *its own* compiled programs
  (the train step, the samplers, bulk generation) through ``jax.jit(...,
  compiler_options=...)`` when they run on the CPU backend. Nothing global changes and other
  JAX code in the process is untouched; on GPU/TPU it is empty. The default is one fixed,
  documented set, ``CPU_COMPILER_OPTIONS``: XLA:CPU's experimental YNNPACK library fusions (on
  by default in jaxlib 0.10 for convolutions and dots) off, since they measured slower than
  XLA's own Eigen kernels for these UNets (``benchmarks/BENCHMARKS.md``, Levers). The same
  inputs give the same numbers on every machine with the same jaxlib: no measurement decides
  the compiled program. Other sets round floats differently, so they change a run's numbers:
  ``JAXDIFF_CPU_COMPILER_OPTIONS=off`` (XLA's defaults), ``set_cpu_compiler_options({...})``,
  an option named in ``XLA_FLAGS`` (a user's flag always wins), or, opt-in,
  ``JAXDIFF_CPU_COMPILER_OPTIONS=auto``: ``tune_cpu_compiler_options`` times a small
  convolution-block train step under each of ``CPU_OPTION_CANDIDATES`` (about 2 s) at the first
  compile and caches the faster in ``~/.cache/jaxdiff/cpu_options.json`` keyed by CPU model,
  instruction-set flags, core count and jaxlib version (faster on some machines; which set wins
  may depend on the load at probe time). A training run records the options it compiled with in
  its workdir and reuses them on resume (``jaxdiff.training.run_records``).
* ``configure_performance()`` (opt-in, process-wide, call before JAX creates its backend):
  glibc malloc thresholds and optional ``XLA_FLAGS`` (e.g. ``disable_ynn_fusions=True`` for
  code outside jaxdiff's own programs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import logging
import os
import platform as _platform
import statistics
import sys
import tempfile
import time

import jax
import jax.extend.backend
import jax.extend.core
import jax.numpy as jnp
import jaxlib

from jaxdiff.errors import ConfigError

__all__ = [
  "configure_performance",
  "cpu_compiler_options",
  "compiler_options",
  "jit",
  "set_cpu_compiler_options",
  "tune_cpu_compiler_options",
  "machine_fingerprint",
  "CPU_COMPILER_OPTIONS",
  "CPU_OPTION_CANDIDATES",
  "CPU_XLA_FLAGS",
  "YNN_OFF_FLAGS",
  "MALLOC_MMAP_THRESHOLD",
  "MALLOC_TRIM_THRESHOLD",
  "backend_initialized",
  "setup_compilation_cache",
  "MODES",
]

log = logging.getLogger(__name__)

# XLA debug option -> value, for jaxdiff's own executables on CPU (see the module docstring).
CPU_COMPILER_OPTIONS: dict[str, str | int | bool] = {
  "xla_cpu_experimental_ynn_fusion_type": "",
}
_override: dict | None = None
ENV_SWITCH = "JAXDIFF_CPU_COMPILER_OPTIONS"
# JAXDIFF_CPU_COMPILER_OPTIONS values: unset, "static" or "default": CPU_COMPILER_OPTIONS; "off": XLA's
# defaults; "auto": the measured choice (opt-in).
MODES = ("static", "default", "off", "auto")
_OFF = ("0", "off", "false", "no")
# The option sets tune_cpu_compiler_options chooses between (the first is the static default).
CPU_OPTION_CANDIDATES: dict[str, dict] = {
  "ynn_off": dict(CPU_COMPILER_OPTIONS),
  "xla_default": {},
}
# A candidate replaces the static default only when its probe is this much faster (noise margin).
TUNE_MARGIN = 0.05
TUNE_CACHE_ENV = "JAXDIFF_CPU_TUNE_CACHE"  # the cache file ("" = ~/.cache/jaxdiff/cpu_options.json)
_tuned: dict | None = None

# flag -> value. An empty value is meaningful (an empty list of fusion types).
CPU_XLA_FLAGS: dict[str, str] = {}
YNN_OFF_FLAGS: dict[str, str] = {
  "--xla_cpu_experimental_ynn_fusion_type": "",
}

# glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX = 32 MiB) and a
# 4 GiB trim threshold: freed blocks stay in the heap for the next step.
MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 4 * 1024 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD = -3

_applied: dict | None = None


def backend_initialized() -> bool:
  """Whether JAX has already been asked for a backend (then XLA_FLAGS changes have no effect):
  ``jax.extend.backend.get_backend``, which every device query goes through, has been called."""
  try:
    return jax.extend.backend.get_backend.cache_info().currsize > 0
  except AttributeError:  # not a cached function in this JAX: assume the backend is not there yet
    return False


def set_cpu_compiler_options(options: dict | None) -> None:
  """Replace jaxdiff's CPU compiler options for programs compiled from now on: a dict of XLA
  debug options (``{}``: XLA's own defaults), or ``None`` to restore ``CPU_COMPILER_OPTIONS``."""
  global _override
  if options is not None and not isinstance(options, dict):
    raise TypeError(f"set_cpu_compiler_options takes a dict or None, got {type(options).__name__}")
  _override = None if options is None else dict(options)


def option_mode() -> str:
  """``JAXDIFF_CPU_COMPILER_OPTIONS`` as one of "static" (also when unset), "off" or "auto";
  ConfigError naming the variable for any other value."""
  mode = os.environ.get(ENV_SWITCH, "").strip().lower()
  if mode in ("", "static", "default"):
    return "static"
  if mode in _OFF:
    return "off"
  if mode == "auto":
    return "auto"
  raise ConfigError(
    f"{ENV_SWITCH}={mode!r} is not one of static (the default: YNNPACK fusions off), off (XLA's "
    "defaults) or auto (measure the faster set on this machine once and cache it)."
  )


def cpu_compiler_options(platform: str | None = None) -> dict:
  """The XLA options jaxdiff compiles its programs with: on the CPU backend the
  ``set_cpu_compiler_options`` override, else ``CPU_COMPILER_OPTIONS`` (the fixed default), ``{}``
  under ``JAXDIFF_CPU_COMPILER_OPTIONS=off``, this machine's measured choice under ``=auto``
  (``tune_cpu_compiler_options``); ``{}`` on any other platform. Options the user names in
  ``XLA_FLAGS`` are left out, so a user's flag always wins. ``platform`` defaults to
  ``jax.default_backend()``."""
  mode = option_mode()
  if mode == "off":
    return {}
  if platform is None:
    platform = jax.default_backend()
  if platform != "cpu":
    return {}
  if _override is not None:
    options = dict(_override)
  elif mode == "auto":
    options = dict(tune_cpu_compiler_options())
  else:
    options = dict(CPU_COMPILER_OPTIONS)
  user = {tok.split("=", 1)[0].lstrip("-") for tok in os.environ.get("XLA_FLAGS", "").split()}
  return {k: v for k, v in options.items() if k not in user}


def machine_fingerprint() -> dict:
  """What the tuned CPU options are keyed by: CPU model, its SIMD feature flags, core count,
  jaxlib version and XLA_FLAGS."""
  model, flags = "", ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and not model:
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = " ".join(
            sorted(t for t in line.split(":", 1)[1].split() if t.startswith(("avx", "amx", "fma")))
          )
        if model and flags:
          break
  except OSError:
    pass
  return dict(
    cpu=model or _platform.processor() or _platform.machine(),
    simd=flags,
    cores=os.cpu_count(),
    jaxlib=jaxlib.__version__,
    xla_flags=os.environ.get("XLA_FLAGS", ""),
  )


def _cache_path() -> str:
  return os.environ.get(TUNE_CACHE_ENV) or os.path.join(
    os.path.expanduser("~"), ".cache", "jaxdiff", "cpu_options.json"
  )


def _machine_key(fp: dict) -> str:
  return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}


def _write_cache(path: str, data: dict) -> None:
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".cpu_options.")
    with os.fdopen(fd, "w") as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:  # an unwritable cache only means measuring again next time
    log.warning("Could not cache the tuned CPU options in %s (%s).", path, e)


def _probe_program():
  """A convolution block's forward and backward at two widths (32 channels 16x16, 128 channels
  8x8: the first and the deep levels of the benchmark UNets) with a group-norm-like reduction
  and SiLU: the work whose kernels the candidates change."""

  def block(ws, x):
    h = x
    for w in ws:
      h = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
      h = (h - h.mean(axis=(1, 2), keepdims=True)) * jax.lax.rsqrt(h.var(axis=(1, 2), keepdims=True) + 1e-5)
      h = jax.nn.silu(h)
    return jnp.mean(h * h)

  def loss(params, xs):
    return sum(block(ws, x) for ws, x in zip(params, xs))

  key = jax.random.key(0)
  params, xs = [], []
  for batch, size, ch in ((8, 16, 32), (8, 8, 128)):
    k1, k2, k3, key = jax.random.split(key, 4)
    params.append([0.05 * jax.random.normal(k, (3, 3, ch, ch)) for k in (k1, k2)])
    xs.append(jax.random.normal(k3, (batch, size, size, ch)))
  return jax.value_and_grad(loss), (params, xs)


def _probe(candidates: dict[str, dict], rounds: int) -> dict[str, float]:
  """Median seconds of the probe under each candidate, interleaved rounds (alternating order)."""
  fn, args = _probe_program()
  lowered = jax.jit(fn).lower(*args)
  compiled = {name: lowered.compile(compiler_options=opts or None) for name, opts in candidates.items()}
  for c in compiled.values():  # warm-up
    jax.block_until_ready(c(*args))
  times: dict[str, list[float]] = {name: [] for name in compiled}
  names = list(compiled)
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      t0 = time.perf_counter()
      jax.block_until_ready(compiled[name](*args))
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


def _can_tune() -> bool:
  if _inside_trace():
    return False
  try:
    if jax.config.read("jax_disable_most_optimizations"):  # test settings: timings mean nothing
      return False
    return jax.process_count() == 1  # every process of a multi-host run must compile the same
  except Exception:
    return False


def tune_cpu_compiler_options(force: bool = False, rounds: int = 7) -> dict:
  """This machine's fastest candidate of ``CPU_OPTION_CANDIDATES`` for jaxdiff's CPU programs.

  Measured once per machine (``machine_fingerprint``) and cached in
  ``~/.cache/jaxdiff/cpu_options.json`` (``$JAXDIFF_CPU_TUNE_CACHE``); later calls read the
  cache. The first candidate (``CPU_COMPILER_OPTIONS``) is kept unless another is faster by more
  than ``TUNE_MARGIN`` on the probe. Where measuring makes no sense (inside a trace, tests'
  ``jax_disable_most_optimizations``, several processes) the static default is returned and
  nothing is cached. ``force=True`` measures again and replaces the cached entry. Only used when
  asked for (``JAXDIFF_CPU_COMPILER_OPTIONS=auto``): a timing never decides the default program.
  """
  global _tuned
  if _tuned is not None and not force:
    return dict(_tuned["options"])
  if not _can_tune():
    return dict(CPU_COMPILER_OPTIONS)
  fp = machine_fingerprint()
  key, path = _machine_key(fp), _cache_path()
  cache = _read_cache(path)
  entry = cache.get(key)
  if not force and isinstance(entry, dict) and isinstance(entry.get("options"), dict):
    _tuned = entry
    return dict(entry["options"])
  try:
    t0 = time.perf_counter()
    times = _probe(CPU_OPTION_CANDIDATES, rounds)
    spent = time.perf_counter() - t0
  except Exception as e:  # the probe must never stop a program: keep the static default
    log.warning("CPU option probe failed (%s); using %s.", e, CPU_COMPILER_OPTIONS)
    return dict(CPU_COMPILER_OPTIONS)
  first = next(iter(CPU_OPTION_CANDIDATES))
  best = min(times, key=times.get)
  if times[best] > (1.0 - TUNE_MARGIN) * times[first]:
    best = first
  entry = dict(
    choice=best,
    options=dict(CPU_OPTION_CANDIDATES[best]),
    probe_s=times,
    probe_wall_s=spent,
    machine=fp,
    date=time.strftime("%Y-%m-%dT%H:%M:%S"),
    loadavg=_loadavg(),
  )
  log.info("jaxdiff CPU options for this machine: %s (probe %s)", best, times)
  cache[key] = entry
  _write_cache(path, cache)
  _tuned = entry
  return dict(entry["options"])


def _loadavg() -> str:
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return ""


def compiler_options() -> dict | None:
  """What to pass as ``compiler_options=`` for a jaxdiff program: the CPU options, or None."""
  return cpu_compiler_options() or None


_TOP_LEVEL = jax.extend.core.get_opaque_trace_state()  # the eval trace: no transformation active


def _inside_trace() -> bool:
  """Whether we are being traced by an outer jit/vmap/grad (where options cannot be passed)."""
  return jax.extend.core.get_opaque_trace_state() != _TOP_LEVEL


def jit(fun, **jit_kwargs):
  """``jax.jit(fun, **jit_kwargs)`` compiled with jaxdiff's CPU options at top level.

  JAX accepts ``compiler_options`` only on a top-level jit; when the wrapper is called while an
  outer transformation traces (a user's own ``jit``/``vmap``), the option-free jitted function
  runs instead, so the caller's program is compiled with the caller's options. One jitted
  function per option set keeps each its own compilation cache.
  """
  cache: dict[tuple, object] = {}

  def jitted(options: dict):
    key = tuple(sorted(options.items()))
    fn = cache.get(key)
    if fn is None:
      fn = cache[key] = jax.jit(fun, compiler_options=options or None, **jit_kwargs)
    return fn

  @functools.wraps(fun)
  def call(*args, **kwargs):
    options = {} if _inside_trace() else cpu_compiler_options()
    return jitted(options)(*args, **kwargs)

  call.jitted = jitted  # the underlying jax.jit objects (for .lower / AOT use)
  call.cache = cache  # options tuple -> jitted function
  return call


def _append_xla_flags(flags: dict[str, str]) -> list[str]:
  current = os.environ.get("XLA_FLAGS", "")
  present = {tok.split("=", 1)[0] for tok in current.split()}
  added = [f"{name}={value}" for name, value in flags.items() if name not in present]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current] + added).strip()
  return added


def _tune_malloc() -> bool:
  """mallopt(M_MMAP_THRESHOLD, 32 MiB) and mallopt(M_TRIM_THRESHOLD, 4 GiB) on glibc."""
  tunables = (
    f"glibc.malloc.mmap_threshold={MALLOC_MMAP_THRESHOLD}:glibc.malloc.trim_threshold={MALLOC_TRIM_THRESHOLD}"
  )
  if "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = tunables  # for child processes (read at their start)
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl or another libc without mallopt
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  mallopt.restype = ctypes.c_int
  ok = mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 1
  # The trim threshold is an int in mallopt: clamp to its range (2 GiB - 1 still never trims
  # at our scale).
  ok &= mallopt(_M_TRIM_THRESHOLD, min(MALLOC_TRIM_THRESHOLD, 2**31 - 1)) == 1
  return bool(ok)


def configure_performance(
  cpu_flags: bool = True,
  malloc: bool = True,
  disable_ynn_fusions: bool = False,
  extra_xla_flags: dict[str, str] | None = None,
) -> dict:
  """Apply jaxdiff's CPU performance settings; call before JAX initialises its backend.

  Args:
    cpu_flags: append ``CPU_XLA_FLAGS`` (currently none) to ``XLA_FLAGS`` (flags the user set
      are kept).
    malloc: glibc malloc thresholds (in-process ``mallopt``; ``GLIBC_TUNABLES`` for children).
    disable_ynn_fusions: also append ``YNN_OFF_FLAGS``: the same setting as
      ``CPU_COMPILER_OPTIONS`` but process-wide, for JAX code outside jaxdiff's programs.
    extra_xla_flags: more ``{"--flag": "value"}`` to append the same way.

  Returns what was applied: ``{"xla_flags_added": [...], "malloc": bool,
  "backend_was_initialized": bool}``. Calling it again is harmless. If the backend already
  exists, the XLA flags cannot take effect any more: a warning says so.
  """
  global _applied
  flags = dict(CPU_XLA_FLAGS) if cpu_flags else {}
  if disable_ynn_fusions:
    flags.update(YNN_OFF_FLAGS)
  flags.update(extra_xla_flags or {})
  late = backend_initialized()
  added = _append_xla_flags(flags)
  if late and added:
    log.warning(
      "configure_performance() ran after JAX created its backend: the XLA flags %s "
      "take effect only in new processes. Call it before any JAX computation.",
      added,
    )
  tuned = _tune_malloc() if malloc else False
  result = {"xla_flags_added": added, "malloc": tuned, "backend_was_initialized": late}
  _applied = (
    result
    if _applied is None
    else {**_applied, **result, "xla_flags_added": _applied["xla_flags_added"] + added}
  )
  return result


def setup_compilation_cache(cache_dir: str) -> str | None:
  """Persistent XLA compilation cache, so a restarted run skips most of the compile: ``cache_dir``
  ("" = ~/.cache/jaxdiff/xla, "none" disables; config.train.compilation_cache_dir). Process-wide
  (``jax.config``): the CLIs call it once at start-up; library calls never do. Returns the folder
  in use, or None (an unwritable cache only costs compile time: a warning, no error)."""
  if cache_dir == "none":
    return None
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "jaxdiff", "xla")
  try:
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  except Exception as e:  # an unwritable cache only costs compile time
    log.warning("Compilation cache disabled (%s).", e)
    return None
  return cache_dir
