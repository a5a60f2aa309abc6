"""What one more 1 s audio clip costs to compress and decompress with a plain 16-bit mixture model, on this machine.

    python benchmarks/audio_coding.py                 # 8 kHz and 16 kHz, budgets 4 and 20, plus K-wide tables
    python benchmarks/audio_coding.py --rates 8000 --budgets 20 --no-tables

The model is `experiments/fsdd.py` (OA-ARDM, DiffWave, discretised logistic mixture over 65,536 classes) at the
given sample rate with 1 s items, trained for one step on random clips (coding is exact for any parameters; the
rate of an untrained model is not the point here). Clips are FSDD recordings (../shared/data/fsdd), two joined
for 16 kHz. Each row times `compress_items` + `decompress_items` (exact round trip checked) for 1 and for 2 clips
in one container (per-item mode, naive policy of each of --budgets network calls, compiles done by a warm-up run);
the marginal cost of a clip is the difference, as the network calls are batched. "host coding" is the host side
alone (the same walk with the network outputs replayed from memory); "network s/call" is the median time of one
network call on one clip (tables included), so a round trip's network share is about 2 x budget x that. The last rows code the same clip with K-wide
tables (the scheme before binary splits), on a --table-samples prefix of the clip, scaled to 1 s.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from ardm_jax import coding_items, coding_model, coding_policy, configs, entropy_models, train  # noqa: E402
from ardm_jax.coding import orders, walk  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(REPO, "..", "shared", "data", "fsdd", "fsdd_8khz.npz")


def build_model(rate: int, workdir: str) -> coding_model.CodingModel:
  import ml_collections  # pylint: disable=import-outside-toplevel

  config = configs.load_config_file(os.path.join(REPO, "experiments", "fsdd.py"))
  config.data = ml_collections.ConfigDict(
    dict(
      name="random",
      kind="audio",
      shape=(rate,),
      num_classes=1 << 16,
      sample_rate=rate,
      bits=16,
      train_items=4,
      eval_items=4,
      seed=0,
      augment="none",
    )
  )
  config = configs.apply_overrides(
    config,
    [
      "--config.train.batch_size=2",
      "--config.train.num_steps=1",
      "--config.train.eval_batch_size=2",
      "--config.train.checkpoint_every=1",
    ],
  )
  train.train_and_evaluate(config, workdir, stop_at_step=1)
  return coding_model.open_coding_model(workdir)


def clips(rate: int, n: int) -> np.ndarray:
  """n clips of 1 s as the model's classes (PCM + 32768)."""
  with np.load(FSDD) as f:
    flat = np.asarray(f["audio"]).astype(np.int64)  # the recordings one after the other
  out = np.stack([flat[i * rate : (i + 1) * rate] for i in range(n)])
  return (out + 32768).astype(np.int32)


class Replay:
  """The predictor's outputs per policy step, recorded by the first walk and played back after: times the host side
  of coding alone (encoder and decoder see the same outputs at the same step)."""

  positions_only = True

  def __init__(self, predictor):
    self.predictor, self.by_step = predictor, {}

  def __call__(self, x, known, t, pos):
    if t not in self.by_step:
      self.by_step[t] = self.predictor(x, known, t, pos)
    return self.by_step[t]


def host_coding_seconds(cm, items, steps, symbols, reps: int) -> float:
  """Median seconds of encode + decode (per-item streams) with the network outputs replayed."""
  replay, sigma, K = (
    Replay(cm.predictor.with_symbols(symbols.name)),
    orders.stage_orders(0, items.shape[1], 1),
    cm.spec.num_classes,
  )
  walk.encode_items(replay, items, sigma, steps, K, symbols=symbols)  # records
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    payloads = walk.encode_items(replay, items, sigma, steps, K, symbols=symbols)
    x = walk.decode_items(replay, payloads, sigma, steps, len(items), items.shape[1], K, symbols=symbols)
    times.append(time.perf_counter() - start)
    assert np.array_equal(x, items)
  return statistics.median(times)


def first_step_seconds(cm, x, n: int, symbols, reps: int) -> float:
  """Median seconds to push and pop the first n variables of the order at step 0 with `symbols` (network excluded)."""
  import constriction  # pylint: disable=import-outside-toplevel

  K, D = cm.spec.num_classes, x.shape[1]
  pos = np.argsort(orders.order_from_seed(0, D), kind="stable")[:n]
  params = cm.predictor.with_symbols(symbols.name)(np.full_like(x, K), np.zeros(x.shape, bool), 0, pos)
  sym = x[:, pos]
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    enc = constriction.stream.stack.AnsCoder()
    symbols.push([enc], sym, params)
    dec = constriction.stream.stack.AnsCoder(enc.get_compressed())
    assert np.array_equal(symbols.pop([dec], params), sym)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def network_call_seconds(cm, x, reps: int) -> float:
  """Median seconds of one network call (and its coding parameters) on the clips x, half of the variables known."""
  D = x.shape[1]
  known = np.zeros(x.shape, bool)
  known[:, ::2] = True
  pos = np.flatnonzero(~known[0])
  cm.predictor(x, known, D // 2, pos)  # compiles
  times = []
  for _ in range(max(reps, 3)):
    start = time.perf_counter()
    cm.predictor(x, known, D // 2, pos)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def round_trip_seconds(cm, items, steps, reps: int) -> tuple[float, int, float]:
  """(median seconds of compress_items + decompress_items, bytes, model NLL bits per sample)."""
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    data, stats = coding_items.compress_items(cm, items, mode="item", steps=steps, order_seed=0)
    _, x, _ = coding_items.decompress_items(cm, data, max_symbols=1 << 30)
    times.append(time.perf_counter() - start)
    assert np.array_equal(x.reshape(items.shape), items), "round trip failed"
  return statistics.median(times), len(data), stats.model_nll_bits / items.size


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--rates", default="8000,16000")
  ap.add_argument("--budgets", default="4,20", help="comma-separated network-call budgets (naive policies)")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--no-tables", action="store_true", help="skip the K-wide table baseline")
  ap.add_argument("--table-samples", type=int, default=400)
  args = ap.parse_args()
  rows = []
  for rate in [int(r) for r in args.rates.split(",")]:
    with tempfile.TemporaryDirectory() as wd:
      cm = build_model(rate, os.path.join(wd, "model"))
      x = clips(rate, 2)
      per_call = network_call_seconds(cm, x[:1], args.reps)
      for budget in [int(b) for b in args.budgets.split(",")]:
        steps, _ = coding_policy.encoder_policy(cm, budget, naive=True)
        round_trip_seconds(cm, x[:1], steps, 1)  # compiles (batch of 1 and of 2 share nothing; both warmed)
        round_trip_seconds(cm, x, steps, 1)
        one, nbytes, nll = round_trip_seconds(cm, x[:1], steps, args.reps)
        two, _, _ = round_trip_seconds(cm, x, steps, args.reps)
        host = host_coding_seconds(cm, x[:1], steps, cm.predictor.symbols, args.reps)
        rows.append((rate, budget, "splits", one, two, two - one, host, per_call, 8 * nbytes / rate, nll))
      if not args.no_tables:
        # The scheme before splits, timed on the first n variables of the order (one step), scaled to 1 s; the
        # splits on the same variables for a like-for-like ratio.
        n = args.table_samples
        tables = first_step_seconds(cm, x[:1], n, entropy_models.CategoricalTables(cm.spec.num_classes), args.reps)
        splits = first_step_seconds(cm, x[:1], n, cm.predictor.symbols, args.reps)
        nan = float("nan")
        rows.append(
          (rate, "-", f"tables, {n} samples x {rate / n:.0f}", nan, nan, nan, tables * rate / n, nan, nan, nan)
        )
        rows.append(
          (rate, "-", f"splits, {n} samples x {rate / n:.0f}", nan, nan, nan, splits * rate / n, nan, nan, nan)
        )
  print(
    "| rate | budget | coding | 1 clip s | 2 clips s | marginal s/clip | host coding s/clip | network s/call | "
    "file bits/sample | model NLL bits/sample |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.3f} | "
      f"{r[8]:.3f} | {r[9]:.3f} |"
    )


if __name__ == "__main__":
  main()
