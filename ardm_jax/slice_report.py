"""`ardm preflight --topology SLICE`: the real-size train and evaluation steps compiled ahead of time for a TPU
slice on this machine, with per-device memory, FLOPs per step, a roofline step time from the chip's peak, what
the whole run would take at that speed, and whether the train step fits the chips' HBM (slice_fit.py: if not, the
settings that make it fit, each compiled and measured).

FLOPs and bytes count each loop (scanned layers) by its trip count (loop_costs.py); the executed FLOPs are checked
against an independent count: the same step lowered for one device with its layers unrolled (model_flops.py's
counting program, with and without the config's remat recompute).

Needs libtpu (`pip install "jax[tpu]"`, no TPU needed) and the environment `device_env.prepare_compiler` sets
before JAX starts; without libtpu, `cpu_estimate=True` compiles for as many fake CPU devices instead (XLA:CPU
numbers, an estimate only).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time

import jax
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding
import numpy as np

from ardm_jax import checkpoint, configs, held_out, loop_costs, model_flops, sharding, slice_fit, train
from ardm_jax.device_env import TOPOLOGIES, num_topology_devices
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


def _out_of_memory(err: Exception) -> str:
  """The compiler's one-line reason where `err` is its out-of-memory refusal; '' for any other error."""
  text = str(err)
  if "RESOURCE_EXHAUSTED" not in text:
    return ""
  reason = text.split("RESOURCE_EXHAUSTED:", 1)[1].strip().splitlines()[0]
  return reason.split(". ")[0].rstrip(".").removeprefix("Ran out of memory on HBM, ")


def next_slice(topology: str) -> str | None:
  """The slice of the same chip with twice the chips, where TOPOLOGIES has one."""
  chip, n = topology.split("-")[0], num_topology_devices(topology)
  bigger = [t for t in TOPOLOGIES if t.startswith(chip + "-") and num_topology_devices(t) == 2 * n]
  return bigger[0] if bigger else None


def compile_for_topology(config, topology: str, have_libtpu: bool, train_only: bool = False) -> dict:
  """Compiles the train step and the evaluation step of `config` for the slice; returns the report's numbers.

  A train step the compiler refuses for lack of memory is reported, not raised: report["train"] is then
  (None, seconds, the compiler's reason).
  """
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

  report = {"target": target, "params": count_params(setup.abstract_state.params), "setup": setup, "spec": spec}
  with setup.context():
    start = time.time()
    try:
      compiled = train.compile_train_step(setup).lower(state, batch(train_batch), key).compile()
      report["train"] = (compiled, time.time() - start, "")
    except jax.errors.JaxRuntimeError as err:
      reason = _out_of_memory(err)
      if not reason:
        raise
      report["train"] = (None, time.time() - start, reason)
    if not train_only:
      start = time.time()
      eval_fn = held_out.make_eval_fn(setup)
      compiled = jax.jit(eval_fn).lower(state.ema_params, batch(eval_batch), key).compile()
      report["eval"] = (compiled, time.time() - start, "")
  report["eval_batch"] = eval_batch
  return report


def measured_fit(report: dict) -> slice_fit.Measured:
  compiled, _, reason = report["train"]
  return slice_fit.Measured(peak_memory(compiled)[1], "") if compiled is not None else slice_fit.Measured(None, reason)


def independent_flops(config, spec) -> tuple[float, float]:
  """Global FLOPs of one train step from the step lowered for one device with its layers unrolled and plain
  attention (model_flops.counting_setup): (model FLOPs without recompute, the same with the config's remat)."""
  batch = jax.ShapeDtypeStruct((int(config.train.batch_size),) + tuple(spec.shape), np.int32)
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))

  def count(setup):
    fn = train.compile_train_step(setup)
    return model_flops.lowered_flops(fn, setup.abstract_state, batch, key, context=setup.context)

  flat = model_flops.counting_setup(config, spec)
  model = count(flat)
  remat = _remat_name(config)
  if remat == "none" or "remat" not in config.model:
    return model, model
  remat_config = copy.deepcopy(flat.config)
  remat_config.model.remat = remat
  return model, count(build_setup(remat_config, spec, devices=jax.local_devices()[:1]))


def run_topology(config_path: str, overrides, topology: str, have_libtpu: bool) -> int:
  """Prints the report for the config at `config_path` (with `overrides`); call `device_env.prepare_compiler`
  first, before JAX starts (`have_libtpu` is what it returns). Returns 1 where the train step does not fit."""
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
  # without recompute, are model_flops.py's.
  print(
    "| program | compile | peak memory per device | executed FLOPs per step (all devices) | bytes per device | "
    "compute time | memory time | roofline step time |"
  )
  print("|---|---|---|---|---|---|---|---|")
  times, executed = {}, None
  for name, label in (
    ("train", f"train step, batch {int(tc.batch_size)}"),
    ("eval", f"eval step, batch {report['eval_batch']}"),
  ):
    compiled, seconds, reason = report[name]
    if compiled is None:
      print(f"| {label} | {seconds:.0f}s | out of memory: {reason} | - | - | - | - | - |")
      continue
    rows, peak = peak_memory(compiled)
    cost = loop_costs.compiled_cost(compiled)
    executed = cost.flops * n if name == "train" else executed
    compute, memory = cost.flops / peak_flops, cost.bytes_accessed / hbm_bw
    times[name] = max(compute, memory)
    fit = "" if not have_libtpu else f" ({100 * peak / hbm:.0f}% of {TOPOLOGIES[topology][3]} GiB)"
    print(
      f"| {label} | {seconds:.0f}s | {_mib(peak)}{fit} | {cost.flops * n:.3e} | {_mib(cost.bytes_accessed)} | "
      f"{1e3 * compute:.1f} ms | {1e3 * memory:.1f} ms | {1e3 * times[name]:.1f} ms |"
    )
    if cost.unknown_trip_counts:
      print(f"({name}: {len(cost.unknown_trip_counts)} loop(s) without a known trip count, counted once)")
  model, with_remat = independent_flops(config, report["spec"])
  print(
    f"independent count (the step lowered for one device, layers unrolled): model FLOPs {model:.3e} per step, "
    f"{with_remat:.3e} with remat {_remat_name(config)!r} recompute"
    + (f"; the compiled program executes {executed / with_remat:.3f}x that" if executed else "")
  )
  if "train" in times:
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
      "larger; loops counted by their trip counts; bytes accessed counts every fused op's operands and outputs, "
      "some of which stay on chip, so the memory time can overstate; float32 matmuls run below the bf16 peak"
      + ("" if have_libtpu else "; CPU ESTIMATE, not TPU numbers")
      + ")"
    )
  if not have_libtpu:
    print("FIT: not judged on a CPU estimate (XLA:CPU's buffers are not the TPU's); install libtpu for the verdict")
    return 0
  current = measured_fit(report)
  found = []
  if not slice_fit.fits(current, hbm):
    mesh = config.mesh
    kinds = slice_fit.candidates(_remat_name(config), int(mesh.fsdp), int(mesh.data), n, int(tc.batch_size))

    def measure(extra):
      return measured_fit(compile_for_topology(trial_config(config, extra), topology, have_libtpu, train_only=True))

    found = slice_fit.search(measure, kinds, hbm, log=lambda m: print(m, file=sys.stderr, flush=True))
  print(slice_fit.verdict(current, hbm, topology, found, next_slice(topology)))
  return 0 if current.peak is not None and current.peak <= hbm else 1


def trial_config(config, overrides: list[str]):
  """`config` with `overrides`, `config` itself unchanged (apply_overrides sets keys in place: without the copy,
  each candidate of the fit search would inherit the ones tried before it)."""
  return configs.apply_overrides(copy.deepcopy(config), overrides)


def _remat_name(config) -> str:
  value = config.model.get("remat", "none")
  if isinstance(value, bool):
    return "full" if value else "none"
  return str(value)
