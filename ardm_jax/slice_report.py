"""`ardm preflight --topology SLICE`: the real-size train and evaluation steps compiled ahead of time for a TPU
slice on this machine, with per-device memory, FLOPs per step, a roofline step time from the chip's peak and what
the whole run would take at that speed.

Needs libtpu (`pip install "jax[tpu]"`, no TPU needed) and the environment `device_env.prepare_compiler` sets
before JAX starts; without libtpu, `cpu_estimate=True` compiles for as many fake CPU devices instead (XLA:CPU
numbers, an estimate only).
"""

from __future__ import annotations

import dataclasses
import time

import jax
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding
import numpy as np

from ardm_jax import checkpoint, configs, held_out, sharding, train
from ardm_jax.device_env import TOPOLOGIES
from ardm_jax.train_state import build_setup, count_params, data_spec

# Per JAX device (one chip): dense bf16 peak FLOP/s and HBM bytes/s from the Cloud TPU spec sheets.
CHIP_PEAKS = {"v4": (275e12, 1.2e12), "v5e": (197e12, 8.2e11), "v5p": (459e12, 2.76e12), "v6e": (918e12, 1.64e12)}


def tpu_devices(topology: str):
  name, chip_config, host_bounds, _ = TOPOLOGIES[topology]
  desc = topologies.get_topology_desc(
    name,
    "tpu",
    chip_config_name=chip_config,
    chips_per_host_bounds=host_bounds,
    num_slices=1,
    wrap=(False, False, False),
  )
  return list(desc.devices)


def on_devices(setup, devices):
  """The same setup with its mesh and shardings moved onto `devices` (same count, same mesh shape)."""
  mesh = Mesh(
    np.asarray(devices).reshape(setup.mesh.devices.shape), setup.mesh.axis_names, axis_types=setup.mesh.axis_types
  )
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), setup.state_shardings)
  return dataclasses.replace(setup, mesh=mesh, state_shardings=shardings)


def _mib(n: float) -> str:
  return f"{n / 2**20:,.1f} MiB"


def _cost(compiled) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of one device's program, from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def peak_memory(compiled) -> tuple[dict, int]:
  mem = compiled.memory_analysis()
  rows = {
    "arguments": mem.argument_size_in_bytes,
    "outputs": mem.output_size_in_bytes,
    "aliased (donated)": mem.alias_size_in_bytes,
    "temporaries": mem.temp_size_in_bytes,
    "generated code": mem.generated_code_size_in_bytes,
  }
  peak = rows["arguments"] + rows["outputs"] - rows["aliased (donated)"] + rows["temporaries"]
  return rows, peak


def compile_for_topology(config, topology: str, have_libtpu: bool) -> dict:
  """Compiles the train step and the evaluation step of `config` for the slice; returns the report's numbers."""
  spec = data_spec(config)
  setup = build_setup(config, spec, jax.devices())
  sharding.check_config_batches(config, setup.mesh)
  sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)
  if have_libtpu:
    devices = tpu_devices(topology)
    setup = on_devices(setup, devices)
    target = f"{topology} ({TOPOLOGIES[topology][0]}, {len(devices)} x {devices[0].device_kind})"
  else:
    target = f"CPU ESTIMATE for {topology}: {jax.device_count()} fake CPU devices, XLA:CPU buffer assignment"
  state = checkpoint.abstract_with_shardings(setup.abstract_state, setup.state_shardings)
  key_shape = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  key = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=sharding.replicated(setup.mesh))
  train_batch = int(config.train.batch_size)
  eval_batch = sharding.padded_batch_size(int(config.train.eval_batch_size), setup.mesh)

  def batch(size):
    return jax.ShapeDtypeStruct((size,) + spec.shape, np.int32, sharding=sharding.batch_sharding(setup.mesh))

  report = {"target": target, "params": count_params(setup.abstract_state.params), "setup": setup}
  with setup.context():
    start = time.time()
    compiled = train.compile_train_step(setup).lower(state, batch(train_batch), key).compile()
    report["train"] = (compiled, time.time() - start)
    start = time.time()
    eval_fn = held_out.make_eval_fn(setup)
    compiled = jax.jit(eval_fn).lower(state.ema_params, batch(eval_batch), key).compile()
    report["eval"] = (compiled, time.time() - start)
  report["eval_batch"] = eval_batch
  return report


def run_topology(config_path: str, overrides, topology: str, have_libtpu: bool) -> int:
  """Prints the report for the config at `config_path` (with `overrides`); call `device_env.prepare_compiler`
  first, before JAX starts (`have_libtpu` is what it returns)."""
  config = configs.apply_overrides(configs.load_config_file(config_path), overrides)
  report = compile_for_topology(config, topology, have_libtpu)
  setup = report["setup"]
  n = setup.mesh.devices.size
  hbm = TOPOLOGIES[topology][3] * 2**30
  peak_flops, hbm_bw = CHIP_PEAKS[topology.split("-")[0]]
  tc = config.train
  print(
    f"{config_path}: {report['params']:,} parameters, {config.model.name}, dtype "
    f"{config.model.get('dtype', 'float32')}, remat {config.model.get('remat', False)}; {report['target']}"
  )
  print(sharding.describe_layout(setup.mesh, setup.abstract_state, setup.state_shardings))
  # The FLOPs the devices execute (remat recompute included): what the roofline time needs. Model FLOPs for MFU,
  # without recompute, are benchmarks/throughput.py's.
  print(
    "| program | compile | peak memory per device | executed FLOPs per step (all devices) | bytes per device | "
    "compute time | memory time | roofline step time |"
  )
  print("|---|---|---|---|---|---|---|---|")
  times = {}
  for name, label in (
    ("train", f"train step, batch {int(tc.batch_size)}"),
    ("eval", f"eval step, batch {report['eval_batch']}"),
  ):
    compiled, seconds = report[name]
    rows, peak = peak_memory(compiled)
    flops, nbytes = _cost(compiled)
    compute, memory = flops / peak_flops, nbytes / hbm_bw
    times[name] = max(compute, memory)
    fit = "" if not have_libtpu else f" ({100 * peak / hbm:.0f}% of {TOPOLOGIES[topology][3]} GiB)"
    print(
      f"| {label} | {seconds:.0f}s | {_mib(peak)}{fit} | {flops * n:.3e} | {_mib(nbytes)} | "
      f"{1e3 * compute:.1f} ms | {1e3 * memory:.1f} ms | {1e3 * times[name]:.1f} ms |"
    )
  steps = int(tc.num_steps)
  eval_every = int(tc.get("eval_every", 0))
  evals = steps // eval_every if eval_every else 0
  eval_batches = -(-int(tc.get("eval_items", 0)) // report["eval_batch"]) if evals else 0
  total = steps * times["train"] + evals * eval_batches * times["eval"]
  print(
    f"whole run at roofline speed: {steps:,} steps x {1e3 * times['train']:.1f} ms"
    + (f" + {evals:,} held-out evaluations x {eval_batches} batches x {1e3 * times['eval']:.1f} ms" if evals else "")
    + f" = {total / 3600:.1f} h ({total / 86400:.1f} days)"
  )
  print(
    "(per device: compute = FLOPs / bf16 peak, memory = XLA's bytes accessed / HBM bandwidth, roofline = the "
    "larger; bytes accessed counts every fused op's operands and outputs, some of which stay on chip, so the "
    "memory time can overstate; float32 matmuls run below the bf16 peak"
    + ("" if have_libtpu else "; CPU ESTIMATE, not TPU numbers")
    + ")"
  )
  return 0
