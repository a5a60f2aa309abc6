"""Device mesh, logical-axis rules and global batch assembly, all driven by the config.

The networks name their parameter and activation axes once (`embed`, `mlp`, `heads`, ...). The config maps
those logical names onto the mesh axes `data`, `fsdp` and `tensor`, so the same code runs on one CPU, on 8 GPUs
or on a TPU pod: only `config.mesh` and `config.sharding_rules` change.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any
import warnings

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from ardm_jax.configs import BATCH_AXES, DEFAULT_RULES, MESH_AXES


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
  """Sizes for (data, fsdp, tensor); one of them may be -1 to take the remaining devices."""
  sizes = {axis: int(mesh_cfg[axis]) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
    raise ValueError(f"mesh sizes {sizes} are invalid: use positive sizes with at most one -1")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"mesh {sizes} cannot use {num_devices} devices: {num_devices} is not divisible by {fixed}")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(
      f"mesh {sizes} needs {math.prod(sizes.values())} devices but {num_devices} are available; set one mesh size to -1"
    )
  return sizes


def mesh_for_devices(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
  """The mesh a job on a trained model uses on `num_devices`, whatever mesh trained it.

  A checkpoint is restored onto any layout, so the training mesh is only a preference: it is kept when it fits;
  otherwise its fsdp and tensor sizes are kept where they divide the devices (parameters split as in training),
  then either one, with `data` taking the rest, and at last every device on `data` (parameters replicated).

  Args:
    mesh_cfg: the training config's mesh (sizes for data, fsdp and tensor; one may be -1).
    num_devices: the devices the job has.

  Returns:
    Sizes {data, fsdp, tensor} that `make_mesh` accepts for `num_devices` devices.
  """
  sizes = {axis: int(mesh_cfg[axis]) for axis in MESH_AXES}
  try:
    resolve_mesh_shape(sizes, num_devices)
    return sizes
  except ValueError:
    pass
  fsdp, tensor = (max(sizes[axis], 1) for axis in ("fsdp", "tensor"))
  for f, t in ((fsdp, tensor), (fsdp, 1), (1, tensor), (1, 1)):
    if num_devices % (f * t) == 0:
      return {"data": -1, "fsdp": f, "tensor": t}
  raise AssertionError("unreachable: (1, 1) divides every device count")


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the (data, fsdp, tensor) mesh with Auto axes (Explicit axes break Flax linen's nn.Embed)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(mesh_cfg, len(devices))
  shape = tuple(sizes[axis] for axis in MESH_AXES)
  device_grid = np.asarray(devices).reshape(shape)
  return Mesh(device_grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def logical_rules(rules_cfg: Any | None) -> tuple[tuple[str, Any], ...]:
  """Rules from config (lists after a JSON round trip) as the hashable tuples Flax expects."""
  if not rules_cfg:
    return DEFAULT_RULES
  out = []
  for name, axes in rules_cfg:
    out.append((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_to_shardings(specs: Any, mesh: Mesh, rules) -> Any:
  """Maps a tree of logical PartitionSpecs (from nn.get_partition_spec) to NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def global_batch(local_batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """Assembles the global batch from this process's slice (each host reads only its own examples)."""
  sharding = batch_sharding(mesh)
  global_shape = (local_batch.shape[0] * jax.process_count(),) + local_batch.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local_batch, global_shape)


def batch_multiple(mesh: Mesh) -> int:
  """A global batch must be a multiple of this: the data x fsdp shards, and the processes (each feeds its slice)."""
  return math.lcm(mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())


def padded_batch_size(num_rows: int, mesh: Mesh) -> int:
  """The smallest global batch >= num_rows that the mesh and the processes divide."""
  if num_rows < 1:
    raise ValueError(f"a batch needs at least 1 row, got {num_rows}")
  multiple = batch_multiple(mesh)
  return -(-num_rows // multiple) * multiple


def pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
  """`rows` extended to `size` rows by repeating its first row: padding holds valid inputs and is cut off later."""
  rows = np.asarray(rows)
  if not 1 <= len(rows) <= size:
    raise ValueError(f"cannot pad {len(rows)} rows to {size}")
  return np.concatenate([rows, np.repeat(rows[:1], size - len(rows), axis=0)]) if len(rows) < size else rows


def place_rows(rows: np.ndarray, mesh: Mesh) -> jax.Array:
  """Any number of rows as one global batch on the mesh, padded to `padded_batch_size`; keep the first len(rows)
  rows of the result (`to_host(out)[:len(rows)]`).

  Every process passes all rows (the same on each) and contributes its own slice. Jobs whose randomness is
  drawn per row (ardm.sample_orders folds the row index into the key; jax.random draws with the default
  threefry_partitionable counters per element, so a longer batch extends a shorter one) give the real rows the
  same values as an unpadded batch; a row-wise network gives them the same outputs up to float rounding.
  """
  padded = pad_rows(rows, padded_batch_size(len(rows), mesh))
  local = len(padded) // jax.process_count()
  start = jax.process_index() * local
  return global_batch(padded[start : start + local], mesh)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as one NumPy array on every process."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def check_batch_divides_mesh(global_batch_size: int, mesh: Mesh, key: str = "--config.train.batch_size") -> None:
  """A batch that is fed as is (training) must split evenly over the shards and the processes."""
  if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size < 1:
    raise ValueError(f"{key} must be a positive integer, got {global_batch_size!r}")
  multiple = batch_multiple(mesh)
  if global_batch_size % multiple:
    raise ValueError(
      f"{key}={global_batch_size} is not divisible by {multiple} (the data x fsdp shards of the mesh "
      f"{dict(mesh.shape)} and the {jax.process_count()} process(es)); change {key} to a multiple "
      f"of {multiple} or change --config.mesh.*"
    )


def check_config_batches(config: Any, mesh: Mesh) -> list[str]:
  """Checks every batch size a run of `config` will use on `mesh`, before anything is allocated.

  The training batch must divide the mesh (ValueError naming the key otherwise). Evaluation, L_t estimation,
  sampling and compression pad their batches (see `place_rows`), so train.eval_batch_size only needs to be
  >= 1. Returns info lines for the start-up log (empty when nothing is padded).
  """
  check_batch_divides_mesh(config.train.batch_size, mesh, "--config.train.batch_size")
  eval_batch = config.train.eval_batch_size
  if isinstance(eval_batch, (bool, np.bool_)) or not isinstance(eval_batch, (int, np.integer)) or eval_batch < 1:
    raise ValueError(f"--config.train.eval_batch_size must be a positive integer, got {eval_batch!r}")
  padded = padded_batch_size(int(eval_batch), mesh)
  if padded == eval_batch:
    return []
  return [
    f"evaluation batches of {eval_batch} are padded to {padded} rows (a multiple of {batch_multiple(mesh)}, "
    f"the data x fsdp shards and processes); the {padded - eval_batch} padding rows are computed and ignored"
  ]


def per_device_bytes(shardings: Any, abstract: Any) -> int:
  """Bytes of `abstract` that the first device holds under `shardings` (for the start-up log)."""
  total = 0
  for sharding, leaf in zip(jax.tree.leaves(shardings), jax.tree.leaves(abstract)):
    shard_shape = sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard_shape)) * np.dtype(leaf.dtype).itemsize
  return total


def split_over_axis(sharding: NamedSharding, shape: Sequence[int], axis: str = "data") -> NamedSharding:
  """`sharding` further split over mesh `axis` along the dimension with the largest per-device extent that
  `axis` divides (after the split the leaf already has there); unchanged when no dimension is divisible, when
  the axis has size 1, or when the leaf is already split over it.

  ZeRO-1 places the optimizer state and the EMA parameters this way (`shard_over_data`): each device keeps
  1/|axis| of them, while the parameters keep their own layout.
  """
  mesh = sharding.mesh
  ways_axis = mesh.shape[axis]
  spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
  if ways_axis == 1 or any(axis in _mesh_axes(entry) for entry in spec):
    return sharding
  best, best_extent = None, 0
  for dim, (size, entry) in enumerate(zip(shape, spec)):
    ways = math.prod(mesh.shape[a] for a in _mesh_axes(entry))
    if size % (ways * ways_axis) == 0 and size // ways > best_extent:
      best, best_extent = dim, size // ways
  if best is None:
    return sharding
  axes = (axis,) + _mesh_axes(spec[best])
  spec[best] = axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, P(*spec))


def shard_over_data(shardings: Any, abstract: Any) -> Any:
  """Every leaf of `shardings` (a tree of NamedShardings matching `abstract`) split over the `data` axis with
  `split_over_axis`; scalars and leaves with no divisible dimension stay as they are."""
  return jax.tree.map(lambda s, leaf: split_over_axis(s, leaf.shape, "data"), shardings, abstract)


# FSDP exists to split the parameters; above these fractions of parameter bytes left whole on every device
# the run warns, and above the second it stops (the rules almost surely map nothing onto `fsdp`).
FSDP_WARN_REPLICATED = 0.10
FSDP_FAIL_REPLICATED = 0.50


def _mesh_axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def check_param_shardings(
  abstract_params: Any,
  shardings: Any,
  mesh: Mesh,
  *,
  warn_fraction: float = FSDP_WARN_REPLICATED,
  fail_fraction: float = FSDP_FAIL_REPLICATED,
) -> dict:
  """Checks the parameter layout before anything is allocated; returns a summary for the start-up log.

  Raises ValueError when a parameter dimension cannot be split evenly over the mesh axes its logical name
  maps to, or when an FSDP mesh (fsdp > 1) leaves more than `fail_fraction` of the parameter bytes whole
  on every device; warns above `warn_fraction`.
  """
  paths_leaves = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  total = replicated = 0
  offenders = []
  for (path, leaf), sharding in zip(paths_leaves, jax.tree.leaves(shardings)):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    spec = tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec))
    for dim, (size, entry) in enumerate(zip(leaf.shape, spec)):
      ways = math.prod(mesh.shape[a] for a in _mesh_axes(entry))
      if size % ways:
        raise ValueError(
          f"parameter {name} {tuple(leaf.shape)}: dimension {dim} of size {size} cannot be split "
          f"{ways} ways over mesh axes {_mesh_axes(entry)}; map its logical axis to None in "
          "config.sharding_rules, or choose model sizes divisible by the mesh"
        )
    nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    total += nbytes
    if not any("fsdp" in _mesh_axes(entry) for entry in spec):
      replicated += nbytes
      offenders.append((nbytes, name))
  fraction = replicated / max(total, 1)
  summary = {"param_bytes": total, "fsdp_replicated_bytes": replicated, "fsdp_replicated_fraction": fraction}
  if mesh.shape["fsdp"] > 1:
    largest = ", ".join(f"{n} ({b / 2**20:.2f} MiB)" for b, n in sorted(offenders, reverse=True)[:3])
    message = (
      f"FSDP over {mesh.shape['fsdp']} devices leaves {100 * fraction:.1f}% of the parameter bytes "
      f"replicated on every device (largest: {largest})"
    )
    if fraction > fail_fraction:
      raise ValueError(
        f"{message}; map a large parameter axis (default: 'embed') to 'fsdp' in "
        "config.sharding_rules, or set --config.mesh.fsdp=1"
      )
    if fraction > warn_fraction:
      warnings.warn(message + "; consider mapping more logical axes to 'fsdp' in config.sharding_rules", stacklevel=2)
  return summary


def describe_layout(mesh: Mesh, abstract_state: Any, state_shardings: Any) -> str:
  """One start-up log line: the mesh, the processes and what each device holds."""
  sizes = ", ".join(f"{axis}={size}" for axis, size in mesh.shape.items())
  params = per_device_bytes(state_shardings.params, abstract_state.params)
  state = per_device_bytes(state_shardings, abstract_state)
  processes = len({device.process_index for device in mesh.devices.flat})
  zero1 = (
    "; EMA and optimizer state split over data, ZeRO-1"
    if jax.tree.leaves(state_shardings.ema_params) != jax.tree.leaves(state_shardings.params)
    else ""
  )
  return (
    f"mesh ({sizes}) over {mesh.devices.size} {mesh.devices.flat[0].platform} devices in "
    f"{processes} process(es); per device: {params / 2**20:.2f} MiB parameters, "
    f"{state / 2**20:.2f} MiB train state (parameters, EMA, optimizer{zero1})"
  )
