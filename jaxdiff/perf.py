"""CPU / XLA performance settings.

Two mechanisms:

* ``cpu_compiler_options()``: XLA options that jaxdiff passes to *its own* compiled programs
  (the train step, the samplers, bulk generation) through ``jax.jit(...,
  compiler_options=...)`` when they run on the CPU backend. Nothing global changes and other
  JAX code in the process is untouched; on GPU/TPU it is empty. XLA:CPU's experimental
  YNNPACK library fusions (on by default in jaxlib 0.10 for convolutions and dots) measured
  slower than XLA's own Eigen kernels for these UNets, so jaxdiff turns them off for its
  programs. The measurements (``benchmarks/bench_options.py``, machine, versions and figures)
  are in ``benchmarks/BENCHMARKS.md`` (Levers), where they are kept up to date.
  Override with ``set_cpu_compiler_options({...})`` (``{}``: XLA's defaults), the environment
  variable ``JAXDIFF_CPU_COMPILER_OPTIONS=off``, or by naming the option in ``XLA_FLAGS``
  (a user's flag always wins).
* ``configure_performance()`` (opt-in, process-wide, call before JAX creates its backend):
  glibc malloc thresholds and optional ``XLA_FLAGS`` (e.g. ``disable_ynn_fusions=True`` for
  code outside jaxdiff's own programs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

import jax

try:  # private JAX modules, probed: if they move, the functions below assume the safe answer
  from jax._src import core as _jax_core
  from jax._src import xla_bridge as _xla_bridge
except ImportError:  # pragma: no cover
  _jax_core = _xla_bridge = None

__all__ = [
  "configure_performance",
  "cpu_compiler_options",
  "compiler_options",
  "jit",
  "set_cpu_compiler_options",
  "CPU_COMPILER_OPTIONS",
  "CPU_XLA_FLAGS",
  "YNN_OFF_FLAGS",
  "MALLOC_MMAP_THRESHOLD",
  "MALLOC_TRIM_THRESHOLD",
  "backend_initialized",
  "setup_compilation_cache",
]

log = logging.getLogger(__name__)

# XLA debug option -> value, for jaxdiff's own executables on CPU (see the module docstring).
CPU_COMPILER_OPTIONS: dict[str, str | int | bool] = {
  "xla_cpu_experimental_ynn_fusion_type": "",
}
_override: dict | None = None
ENV_SWITCH = "JAXDIFF_CPU_COMPILER_OPTIONS"

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
  """Whether JAX has already created a backend (then XLA_FLAGS changes have no effect)."""
  if "jax" not in sys.modules:
    return False
  try:
    return bool(_xla_bridge.backends_are_initialized())
  except Exception:  # private API moved: assume the worst only if devices were listed
    return False


def set_cpu_compiler_options(options: dict | None) -> None:
  """Replace jaxdiff's CPU compiler options for programs compiled from now on: a dict of XLA
  debug options (``{}``: XLA's own defaults), or ``None`` to restore ``CPU_COMPILER_OPTIONS``."""
  global _override
  if options is not None and not isinstance(options, dict):
    raise TypeError(f"set_cpu_compiler_options takes a dict or None, got {type(options).__name__}")
  _override = None if options is None else dict(options)


def cpu_compiler_options(platform: str | None = None) -> dict:
  """The XLA options jaxdiff compiles its programs with: ``CPU_COMPILER_OPTIONS`` (or the
  ``set_cpu_compiler_options`` override) on the CPU backend, ``{}`` on any other platform or
  when ``JAXDIFF_CPU_COMPILER_OPTIONS=off``. Options the user names in ``XLA_FLAGS`` are left
  out, so a user's flag always wins. ``platform`` defaults to ``jax.default_backend()``."""
  if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "off", "false", "no"):
    return {}
  if platform is None:
    platform = jax.default_backend()
  if platform != "cpu":
    return {}
  options = dict(CPU_COMPILER_OPTIONS if _override is None else _override)
  user = {tok.split("=", 1)[0].lstrip("-") for tok in os.environ.get("XLA_FLAGS", "").split()}
  return {k: v for k, v in options.items() if k not in user}


def compiler_options() -> dict | None:
  """What to pass as ``compiler_options=`` for a jaxdiff program: the CPU options, or None."""
  return cpu_compiler_options() or None


def _inside_trace() -> bool:
  """Whether we are being traced by an outer jit/vmap/grad (where options cannot be passed)."""
  try:
    return not _jax_core.trace_state_clean()
  except AttributeError:  # private API moved: assume top level
    return False


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
  ("" = ~/.cache/jaxdiff/xla, "none" disables; config.train.compilation_cache_dir). Returns the
  folder in use, or None (an unwritable cache only costs compile time: a warning, no error)."""
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
