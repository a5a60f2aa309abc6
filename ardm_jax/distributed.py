"""The one guarded place that starts JAX's multi-process runtime (`jax.distributed.initialize`).

Precedence, decided by `plan` (pure, so it can be tested without a cluster):

1. Explicit flags: `--coordinator_address HOST:PORT --num_processes N --process_id I`, all three or none.
   `--num_processes 1` on its own forces a single process and skips auto-detection.
2. Auto-detection: a SLURM job step with more than one task (`srun`), or a Cloud TPU VM (libtpu installed and
   TPU device files present). JAX then reads the coordinator, process count and process id from SLURM's
   variables or the TPU metadata server.
3. Otherwise a single process: nothing is initialised, so laptops, CI and single-GPU runs never wait on a
   coordinator.

`initialize` must run before anything touches JAX devices (`jax.devices()`, a computation, a device_put);
the `ardm train` command calls it first thing.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import glob
import importlib.util
import os

import jax

FLAG_NAMES = ("--coordinator_address", "--num_processes", "--process_id")
# All of these are set inside an `srun` job step (not in the bare sbatch script), which is when JAX's own
# SLURM detection works.
SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins (or does not join) a multi-process run."""

  mode: str  # 'single' | 'explicit' | 'slurm' | 'cloud_tpu'
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def initializes(self) -> bool:
    return self.mode != "single"

  def describe(self) -> str:
    if self.mode == "single":
      return "single process (no jax.distributed)"
    if self.mode == "explicit":
      return (
        f"process {self.process_id} of {self.num_processes}, coordinator {self.coordinator_address} (explicit flags)"
      )
    return f"multi-process run detected from the {'SLURM job step' if self.mode == 'slurm' else 'Cloud TPU VM'}"


def _on_cloud_tpu_vm() -> bool:
  """libtpu installed and TPU chips attached (/dev/accel* on v2-v4, VFIO devices on v5e and later)."""
  if importlib.util.find_spec("libtpu") is None:
    return False
  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _check_address(address: str) -> None:
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
      f"--coordinator_address {address!r} must be HOST:PORT (process 0's address and a free port, e.g. 10.0.0.1:1234)"
    )


def plan(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  environ: Mapping[str, str] | None = None,
  on_cloud_tpu: bool | None = None,
) -> Plan:
  """Decides how to start; raises ValueError for incomplete or inconsistent flags."""
  environ = os.environ if environ is None else environ
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be at least 1, got {num_processes}")
  if num_processes == 1 and not given[0]:
    if process_id not in (None, 0):
      raise ValueError(f"--process_id {process_id} is out of range for --num_processes 1; use 0 or leave it out")
    return Plan("single", num_processes=1, process_id=0)
  if any(given) and not all(given):
    missing = [name for name, g in zip(FLAG_NAMES, given) if not g]
    raise ValueError(
      f"{', '.join(missing)} missing: {', '.join(FLAG_NAMES)} go together (pass all three on "
      "every process, e.g. --coordinator_address 10.0.0.1:1234 --num_processes 2 --process_id 0)"
    )
  if all(given):
    _check_address(coordinator_address)
    if not 0 <= process_id < num_processes:
      raise ValueError(
        f"--process_id {process_id} must lie in 0..{num_processes - 1} for --num_processes {num_processes}"
      )
    if num_processes == 1:
      return Plan("single", num_processes=1, process_id=0)
    return Plan("explicit", coordinator_address, num_processes, process_id)
  if all(var in environ for var in SLURM_STEP_VARS) and int(environ["SLURM_NTASKS"]) > 1:
    return Plan("slurm", num_processes=int(environ["SLURM_NTASKS"]), process_id=int(environ["SLURM_PROCID"]))
  if on_cloud_tpu is None:
    on_cloud_tpu = _on_cloud_tpu_vm()
  if on_cloud_tpu:
    return Plan("cloud_tpu")
  return Plan("single")


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  timeout_s: int = 300,
) -> Plan:
  """Starts jax.distributed when `plan` says so; calling it again after success is a no-op."""
  decided = plan(coordinator_address, num_processes, process_id)
  if not decided.initializes or jax.distributed.is_initialized():
    return decided
  kwargs = {"initialization_timeout": int(timeout_s)}
  if decided.mode == "explicit":
    kwargs |= {
      "coordinator_address": decided.coordinator_address,
      "num_processes": decided.num_processes,
      "process_id": decided.process_id,
    }
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as err:
    if "must be called before" in str(err):
      raise RuntimeError(
        "ardm_jax.distributed.initialize() ran after JAX had already started its devices; "
        "call it before anything uses jax.devices() or runs a computation"
      ) from err
    raise
  return decided
