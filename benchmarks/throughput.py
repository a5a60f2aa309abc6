"""Train-step throughput and model FLOPs utilisation (MFU) on the local accelerator, one call:

    python benchmarks/throughput.py                                   # CIFAR-10 U-Net at paper width
    python benchmarks/throughput.py --config experiments/text8.py --batch 64
    python benchmarks/throughput.py --config experiments/digits.py:tiny --steps 3 --matmul 512   # CPU smoke run

Synthetic batches of the data set's shape (no download: the paper configs' shapes are known), the real jitted and
sharded train step over all local devices (config mesh). Model FLOPs per step come from XLA's cost analysis of the
compiled step; the peak is measured in the same process as the median throughput of a large bf16 matmul on one
device, times the number of devices. MFU = achieved model FLOP/s / that peak. Prints one markdown row per config;
record GPU/TPU rows in benchmarks/RESULTS.md with the device name.
"""
import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ardm_jax import configs, data, sharding, train  # noqa: E402
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
  return 2.0 * n ** 3 / statistics.median(times)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", default="experiments/cifar10.py")
  ap.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--matmul", type=int, default=8192, help="size of the bf16 matmul that measures the peak")
  args, overrides = ap.parse_known_args()  # the rest: --config.KEY=VALUE overrides
  args.overrides = overrides
  config = configs.apply_overrides(configs.load_config_file(args.config), args.overrides)
  spec = spec_of(config)
  setup = build_setup(config, spec)
  batch_size = args.batch or int(config.train.batch_size)
  sharding.check_batch_divides_mesh(batch_size, setup.mesh)
  step_fn = train.compile_train_step(setup)
  key = jax.device_put(jax.random.PRNGKey(1), sharding.replicated(setup.mesh))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(rng.integers(0, spec.num_classes, (batch_size,) + spec.shape, dtype=np.int32),
                                setup.mesh)
  with setup.context():
    state = setup.init_state(0)
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))  # per step, all devices (XLA's count of the whole program)
    for _ in range(args.warmup):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      state, metrics = compiled(state, batch, key)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  peak = matmul_peak(args.matmul) * jax.device_count()
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"# Train-step throughput ({datetime.date.today()}, {device}, jax {jax.__version__})\n")
  print("| config | params | global batch | compile s | step ms (median) | examples/s | model TFLOP/step "
        "| achieved TFLOP/s | bf16 matmul peak TFLOP/s | MFU |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  print(f"| {args.config} {' '.join(args.overrides)} | {count_params(setup.abstract_state.params):,} | {batch_size} "
        f"| {compile_s:.1f} | {1e3 * step_s:.1f} | {batch_size / step_s:.1f} | {flops / 1e12:.3f} "
        f"| {flops / step_s / 1e12:.2f} | {peak / 1e12:.1f} | {100 * flops / step_s / peak:.1f} % |")


if __name__ == "__main__":
  main()
