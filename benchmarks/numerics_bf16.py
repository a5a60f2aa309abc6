"""bf16 against float32 compute on the same trained parameters: test bits/dim and their paired difference.

  python -P benchmarks/numerics_bf16.py --workdir runs/numerics [--steps 300] [--passes 4]

Trains (or reuses, when WORKDIR already holds them) two small models for `--steps` steps: the digits default
(experiments/digits.py, U-Net) and a narrowed pydoc text model (experiments/local_text.py:pydoc, Transformer).
Then evaluates the SAME EMA parameters with model.dtype float32 and bfloat16 on the same test items, with the same
keys (so the same orders and steps), over `--passes` passes, and prints a markdown table: bits/dim under each
dtype and the difference bf16 - fp32 paired by item, with its standard error across items. The networks keep the
residual streams and logits layers in float32 under bf16 (ardm_jax/nets); the target is |difference| < 0.002.
Measured with the defaults (2 CPU cores shared with other jobs, 9 min, most of it training the digits U-Net at
1 step/s): bf16 - fp32 = -0.00007 ± 0.00003 bits/dim (digits) and +0.00009 ± 0.00006 bits/char (text).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from ardm_jax import configs, data, evaluate, train, workdir  # noqa: E402
from ardm_jax.train_state import build_setup  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, experiment file, overrides): small enough to train a few hundred steps in minutes on 2 CPU cores.
MODELS = (
    ("digits", "digits.py", ["--config.train.eval_passes=0"]),
    ("pydoc text", "local_text.py:pydoc",
     ["--config.data.seq_len=64", "--config.model.emb_dim=128", "--config.model.mlp_dim=512",
      "--config.optim.warmup_steps=100", "--config.train.eval_passes=0", "--config.train.log_every=100"]),
)


def _trained(config_file: str, overrides: list[str], steps: int, path: str):
  config = configs.apply_overrides(configs.load_config_file(os.path.join(REPO, "experiments", config_file)),
                                   overrides + [f"--config.train.num_steps={steps}",
                                                f"--config.train.checkpoint_every={steps}"])
  if not (os.path.isfile(os.path.join(path, train.CONFIG_FILE))
          and workdir.open_workdir(path).step >= steps):
    train.train_and_evaluate(config, path)  # trains, or resumes (and refuses a workdir of another config)
  return workdir.open_workdir(path)


def _per_item_bpd(model, dtype: str, items, passes: int, seed: int) -> np.ndarray:
  config = model.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.dtype = dtype  # the experiment configs may leave the key at the network's default
  setup = build_setup(config, model.spec)  # same parameter tree: only the compute dtype differs
  with setup.context():
    result = evaluate.evaluate_params(setup, model.params, items, passes=passes,
                                      batch_size=int(config.train.eval_batch_size), seed=seed)
  return np.asarray(result["per_item"], np.float64)


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="folder for the trained models (reused when present)")
  parser.add_argument("--steps", type=int, default=300, help="training steps per model")
  parser.add_argument("--passes", type=int, default=4, help="evaluation passes per test item")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rows = ["| data | network | train steps | test items x passes | bpd fp32 | bpd bf16 | bf16 - fp32 (paired) | s |",
          "|---|---|---|---|---|---|---|---|"]
  for name, config_file, overrides in MODELS:
    start = time.time()
    model = _trained(config_file, overrides, args.steps, os.path.join(args.workdir, name.replace(" ", "_")))
    items = data.load(model.config.data).eval_items("test")
    fp32 = _per_item_bpd(model, "float32", items, args.passes, args.seed)
    bf16 = _per_item_bpd(model, "bfloat16", items, args.passes, args.seed)
    (m32, s32), (m16, s16), (diff, sdiff) = _mean_stderr(fp32), _mean_stderr(bf16), _mean_stderr(bf16 - fp32)
    rows.append(f"| {name} | {model.config.model.name} | {model.step} | {len(items)} x {args.passes} | "
                f"{m32:.4f} ± {s32:.4f} | {m16:.4f} ± {s16:.4f} | {diff:+.5f} ± {sdiff:.5f} | "
                f"{time.time() - start:.0f} |")
    print(f"  {name}: done", file=sys.stderr, flush=True)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
