"""The persistent JAX compilation cache every compiling `ardm` command turns on first.

`ardm train`, `eval`, `sample`, `inpaint`, `policy --workdir`, `compress` and `decompress` call `enable(config)`
before they compile anything. A second run of a job with the same shapes (the same config, batch size and
policy length) then loads its XLA executables from the cache instead of compiling them again: the eval, sampling
and coding functions of a large network take minutes to compile on a TPU and tens of seconds on a CPU.

Where the cache lives, first match wins:
  1. the environment variable ARDM_COMPILE_CACHE (a local path or a gs:// URL; empty: off);
  2. the config key `compile_cache_dir` (`--config.compile_cache_dir=...` when training; jobs read the
     config.json of their workdir; '' turns the cache off);
  3. the user cache directory: $XDG_CACHE_HOME/ardm_jax/jax_cache, by default ~/.cache/ardm_jax/jax_cache.

Sharing compiled programs across machines. JAX reads and writes cache directories through etils/epath, so a
Cloud Storage location works as it is; every host of a TPU slice and every later job (eval, sampling, compression)
can then reuse what the first one compiled, e.g. a folder beside the runs:

  export ARDM_COMPILE_CACHE=gs://BUCKET/ardm_runs/jax_cache    # or --config.compile_cache_dir=gs://...
  ardm train --config experiments/cifar10.py --workdir gs://BUCKET/ardm_runs/cifar10

Entries are keyed by the computation, the JAX/jaxlib version, the device kind and the compile options, so one
folder can serve several models, versions and accelerators (stale entries are simply never hit again; delete the
folder to reclaim the space). Anyone who can write to the folder can make your jobs run code of their choosing:
share it only with people you trust.

Thresholds: JAX by default caches only programs that took at least a second to compile; here everything that
took `MIN_COMPILE_TIME_S` or more is cached, whatever its size, so the small CPU programs of tests and local runs
are cached too.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

ENV_VAR = "ARDM_COMPILE_CACHE"
CONFIG_KEY = "compile_cache_dir"
# Compiles faster than this are not worth a file (loading one costs a few milliseconds; more on gs://).
MIN_COMPILE_TIME_S = 0.05


def default_dir() -> str:
  """The per-user default: $XDG_CACHE_HOME/ardm_jax/jax_cache (~/.cache/ardm_jax/jax_cache)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "ardm_jax", "jax_cache")


def resolve_dir(config=None) -> str | None:
  """The cache location for this job (see the module docstring), or None when the cache is off."""
  if ENV_VAR in os.environ:
    path = os.environ[ENV_VAR]
  else:
    value = config.get(CONFIG_KEY) if config is not None else None
    path = default_dir() if value is None else str(value)
  path = path.strip()
  if not path:
    return None
  return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def enable(config=None) -> str | None:
  """Points JAX's persistent compilation cache at `resolve_dir(config)` (or turns it off); returns the location.

  Call it before the job compiles; a program compiled earlier in the process was simply not cached. Calling it
  again (another job in the same process, e.g. in tests) re-points the cache.
  """
  path = resolve_dir(config)
  if path is None:
    if jax.config.jax_compilation_cache_dir is not None:
      jax.config.update("jax_compilation_cache_dir", None)
      compilation_cache.reset_cache()
    return None
  if "://" not in path:
    os.makedirs(path, exist_ok=True)
  if jax.config.jax_compilation_cache_dir != path:
    jax.config.update("jax_compilation_cache_dir", path)
    # JAX opens the cache once, at the first compile; start over so the new location is the one used.
    compilation_cache.reset_cache()
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
  # -1: no minimum entry size (and JAX keeps it instead of substituting its own default).
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path
