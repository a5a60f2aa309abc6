"""Train-step throughput and model FLOPs utilisation (MFU) on the local accelerator, one call:

    python benchmarks/throughput.py                                   # CIFAR-10 U-Net at paper width
    python benchmarks/throughput.py --config experiments/text8.py --batch 64
    python benchmarks/throughput.py --config experiments/digits.py:tiny --steps 3 --matmul 512   # CPU smoke run
    python benchmarks/throughput.py --config experiments/digits.py --steps 3 --matmul 512 --json --check-analytic

Synthetic batches of the data set's shape (no download: the paper configs' shapes are known), the real jitted and
sharded train step over all local devices (config mesh, remat as configured) is what is timed.

Model FLOPs per step (`flops_per_step`) are GLOBAL, without remat recompute, and counted as the trainer counts
them (ardm_jax/model_flops.py, whose docstring says how and why): XLA's cost analysis of the same train step lowered
for one device with the whole global batch, remat off, layer scans unrolled and plain-einsum attention. The timed,
partitioned step's own count is printed beside it for comparison (1/N of the work on N devices, remat included, a
scanned loop body once).

Examples/s is the global batch over the median step time. The peak is measured in the same process as the median
throughput of a large bf16 matmul on one device, times the number of devices; MFU = flops_per_step / step time /
that peak. The MFU against the device kind's datasheet peak at the config's dtype (ardm_jax/device_peaks.py, what
the trainer reports) is printed beside it where the kind is known. `--check-analytic` (U-Net configs) also counts one forward pass of the network by hand (every
convolution, dense layer and attention matmul from the module's sizes, 2 FLOPs per multiply-add; norms,
activations and the softmax are left out) and compares it with XLA's count of that forward pass (one device, global
batch). Prints one markdown row per config, or with `--json` one JSON line; record GPU/TPU rows in
benchmarks/RESULTS.md with the device name.
"""

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ardm_jax import configs, data, device_peaks, model_flops, sharding, train  # noqa: E402
from ardm_jax.nets import layers  # noqa: E402
from ardm_jax.train_state import DataSpec, build_setup, count_params, spec_without_data  # noqa: E402


def spec_of(config) -> DataSpec:
  return spec_without_data(config) or DataSpec.of_dataset(data.load(config.data))


def matmul_peak(n: int, dtype=jnp.bfloat16, reps: int = 10) -> float:
  """Median FLOP/s of an n x n x n matmul on one device."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * n**3 / statistics.median(times)


@dataclasses.dataclass(frozen=True)
class StepTiming:
  """What time_train_step measured: the seconds to lower and compile the train step, the wall time of each timed
  step, and the compiled program (for XLA's cost and memory analyses)."""

  compile_s: float
  step_times: list[float]
  compiled: Any

  @property
  def median_s(self) -> float:
    return statistics.median(self.step_times)


def time_train_step(setup, spec: DataSpec, batch_size: int, steps: int, warmup: int) -> StepTiming:
  """Times the trainer's own jitted train step (train.compile_train_step) of `setup` on a synthetic global batch of
  `batch_size` items of the data's shape: lowers and compiles it once, runs `warmup` steps, then `steps` steps one at
  a time, each waited for with jax.block_until_ready before the clock stops (dispatch is asynchronous)."""
  step_fn = train.compile_train_step(setup)
  key = jax.device_put(jax.random.PRNGKey(1), sharding.replicated(setup.mesh))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    rng.integers(0, spec.num_classes, (batch_size,) + spec.shape, dtype=np.int32), setup.mesh
  )
  with setup.context():
    state = setup.init_state(0)
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics) if warmup else state)
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, batch, key)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
  return StepTiming(compile_s, times, compiled)


def global_step_flops(config, spec, batch_size: int) -> float:
  """Model FLOPs of one train step on the global batch: the trainer's count (model_flops.step_flops)."""
  return model_flops.step_flops(config, spec, batch_size, train.compile_train_step)


def forward_flops_xla(setup1, spec, batch_size: int) -> float:
  """XLA's FLOPs of one network forward pass (inference mode) on the global batch, one device (setup1:
  model_flops.counting_setup), counted as the train step is."""
  shape = (batch_size,) + spec.shape
  fwd = jax.jit(lambda p, x, known, t: setup1.apply_fn(p, x, known, t, False, None))
  args = (
    setup1.abstract_state.params,
    jax.ShapeDtypeStruct(shape, jnp.int32),
    jax.ShapeDtypeStruct(shape, bool),
    jax.ShapeDtypeStruct((batch_size,), jnp.int32),
  )
  return model_flops.lowered_flops(fwd, *args, context=setup1.context)


def unet_forward_flops(net, batch_size: int) -> float:
  """Hand count of one U-Net forward pass (ardm_jax/nets/unet.py): 2 FLOPs per multiply-add of every convolution,
  dense layer and attention matmul (taps on a convolution's zero padding excluded); group norms, swish, the
  softmax, biases and additions are not counted."""
  hh, ww, cc = net.data_shape
  num_out, _, _ = layers.output_input_step_sizes(net)
  pixels, ch, emb = hh * ww, net.ch, net.input_embed_dim
  # A 3x3 'SAME' convolution: kernel taps that land on the zero padding are not multiply-adds (XLA does not count
  # them either), so each in x out channel pair costs (3H - 2)(3W - 2) multiply-adds, not 9 HW.
  taps = (3 * hh - 2) * (3 * ww - 2)
  macs_per_item = 0  # multiply-adds per item
  macs_per_item += ch * 4 * ch + 4 * ch * 4 * ch  # time embedding: sinusoid(ch) -> 4 ch -> 4 ch
  if net.input_numeric:  # conv3x3(values, mask) -> 3/4 ch, and Dense(C * E -> ch / 4)
    macs_per_item += taps * 2 * cc * (3 * ch // 4) + pixels * cc * emb * (ch // 4)
  else:  # conv3x3 over [embeddings, mask]
    macs_per_item += taps * (cc * emb + cc) * ch

  def res(in_ch):  # conv3x3 in -> ch, time projection 4 ch -> ch (per item), conv3x3 ch -> ch, 1x1 skip
    return taps * (in_ch * ch + ch * ch) + (pixels * in_ch * ch if in_ch != ch else 0) + 4 * ch * ch

  # q, k, v and output projections (4 P c^2), logits q k^T and weights @ v (2 P^2 c); heads split c, not the count
  attn = (4 * pixels * ch * ch + 2 * pixels * pixels * ch) if net.attention else 0
  n = net.num_res_blocks
  macs_per_item += n * (res(ch) + attn)  # down
  macs_per_item += 2 * res(ch) + attn  # middle
  macs_per_item += (n + 1) * (res(2 * ch) + attn)  # up: the skip concatenation doubles the input width
  macs_per_item += taps * ch * cc * num_out  # conv_out
  return 2.0 * batch_size * macs_per_item


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="experiments/cifar10.py")
  ap.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--matmul", type=int, default=8192, help="size of the bf16 matmul that measures the peak")
  ap.add_argument("--json", action="store_true", help="print one JSON line instead of the markdown table")
  ap.add_argument(
    "--check-analytic",
    action="store_true",
    help="U-Net: compare a hand count of one forward pass with XLA's (module docstring)",
  )
  args, overrides = ap.parse_known_args()  # the rest: --config.KEY=VALUE overrides
  args.overrides = overrides
  config = configs.apply_overrides(configs.load_config_file(args.config), args.overrides)
  spec = spec_of(config)
  setup = build_setup(config, spec)
  batch_size = args.batch or int(config.train.batch_size)
  sharding.check_batch_divides_mesh(batch_size, setup.mesh)

  flops = global_step_flops(config, spec, batch_size)
  analytic = None
  if args.check_analytic:
    if config.model.name != "unet":
      raise SystemExit(f"--check-analytic counts U-Nets only; {args.config} has model.name={config.model.name!r}")
    setup1 = model_flops.counting_setup(config, spec)
    analytic = {
      "analytic_forward_flops": unet_forward_flops(setup1.net, batch_size),
      "xla_forward_flops": forward_flops_xla(setup1, spec, batch_size),
    }
    analytic["analytic_over_xla"] = analytic["analytic_forward_flops"] / analytic["xla_forward_flops"]

  timing = time_train_step(setup, spec, batch_size, args.steps, args.warmup)
  compile_s, times = timing.compile_s, timing.step_times
  # What XLA counts for one device of the timed program (1/N of the work plus repeats, remat included, a scanned loop
  # body once): shown for comparison, not used.
  per_device_flops = model_flops.flops_of(timing.compiled.cost_analysis())
  step_s = statistics.median(times)
  devices = jax.device_count()
  peak = matmul_peak(args.matmul) * devices
  kind = jax.devices()[0].device_kind
  mfu = flops / step_s / peak
  # The trainer's MFU divides by the datasheet peak of the device kind at the config's dtype (None where unknown).
  sheet_peak = device_peaks.peak_flops(kind, config.model.get("dtype", "float32"))
  sheet_mfu = None if sheet_peak is None else flops / step_s / (sheet_peak * devices)
  if args.json:
    row = {
      "flops_per_step": flops,
      "step_time_s": step_s,
      "examples_per_s": batch_size / step_s,
      "mfu": mfu,
      "devices": devices,
      "device_kind": kind,
      "config": " ".join([args.config] + args.overrides),
      "global_batch": batch_size,
      "flops_source": model_flops.METHOD,
      "per_device_flops_of_timed_step": per_device_flops,
      "peak_flops": peak,
      "datasheet_peak_flops_per_device": sheet_peak,
      "mfu_datasheet": sheet_mfu,
    }
    print(json.dumps(row | (analytic or {})))
    return
  print(f"# Train-step throughput ({datetime.date.today()}, {devices} x {kind}, jax {jax.__version__})\n")
  print(
    "| config | params | global batch | compile s | step ms (median) | examples/s | model TFLOP/step "
    "| achieved TFLOP/s | bf16 matmul peak TFLOP/s | MFU |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  print(
    f"| {args.config} {' '.join(args.overrides)} | {count_params(setup.abstract_state.params):,} | {batch_size} "
    f"| {compile_s:.1f} | {1e3 * step_s:.1f} | {batch_size / step_s:.1f} | {flops / 1e12:.4g} "
    f"| {flops / step_s / 1e12:.3g} | {peak / 1e12:.3g} | {100 * mfu:.2f} % |"
  )
  print(
    f"\nmodel FLOPs: global, {model_flops.METHOD}; XLA's count of the timed step's per-device program "
    f"(partitioned, remat as configured): {per_device_flops:.4g}"
  )
  if sheet_mfu is None:
    print(f"no datasheet peak for device kind {kind!r} (ardm_jax/device_peaks.py): the trainer reports no MFU here")
  else:
    print(
      f"MFU against the datasheet peak ({sheet_peak / 1e12:.4g} TFLOP/s per device, as the trainer): {100 * sheet_mfu:.2f} %"
    )
  if analytic:
    print(
      f"U-Net forward, global batch {batch_size}: hand count {analytic['analytic_forward_flops']:.4g} FLOPs, "
      f"XLA {analytic['xla_forward_flops']:.4g} (ratio {analytic['analytic_over_xla']:.3f})"
    )


if __name__ == "__main__":
  main()
