"""bf16 against float32 compute on the same trained parameters: test bits/dim and their paired difference.

  python -P benchmarks/numerics_bf16.py --workdir runs/numerics [--depth shallow|paper|all] [--passes 4]
      [--compare-old-numerics REV]

Trains (or reuses, when WORKDIR already holds them) small models, then evaluates the SAME EMA parameters with
model.dtype float32 and bfloat16 on the same test items, with the same keys (so the same orders and steps), over
`--passes` passes, and prints a markdown table: bits/dim under each dtype and the difference bf16 - fp32 paired by
item, with its standard error across items. The networks keep the residual streams and logits layers in float32
under bf16 (ardm_jax/nets); the target is |difference| < 0.002.

Models (--depth):
  shallow  the digits default (experiments/digits.py, U-Net of 4 + 2 + 5 ResBlocks) and a narrowed pydoc text model
           (experiments/local_text.py:pydoc, 4-layer Transformer), `--steps` steps each.
  paper    the paper configs' depth and wiring, narrow: the U-Net as experiments/cifar10.py builds it (32 + 33
           ResBlocks and 2 in the middle, attention after each and in the middle, input_numeric, input embedding
           ch/4) at ch=32 on the 8x8 digits, and text8.py's 12-layer Transformer (sinusoidal positions, no t or mask
           inputs) at width 64 on pydoc text crops of 250, `--paper-steps` steps each.
  all      both.

--compare-old-numerics REV also evaluates bf16 with the networks of git revision REV (e.g. 29f7dbf^, before the
residual streams and logits ran in float32 under bf16) on the same parameters. That needs the same parameter tree,
so it applies only to options REV has: the shallow models, and at paper depth extra models with REV's options
(U-Net input_numeric=False; Transformer learned positions with t and mask inputs). Other rows say n/a.

Measured (benchmarks/RESULTS.md, "bf16 against float32 on the same parameters"; the defaults with
--compare-old-numerics 29f7dbf^, 30 min on 2 CPU cores shared with other jobs, 24 min of CPU time): |bf16 - fp32|
at most 0.00009 bits/dim on every model, 0.00002 at paper depth; the older bf16 numerics at most 0.00019.
"""

import argparse
import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ardm_jax import configs, data, held_out, nets, train, workdir  # noqa: E402
from ardm_jax.train_state import build_setup, make_apply_fn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Model:
  name: str
  depth: str  # 'shallow' | 'paper'
  config_file: str
  updates: dict  # {config group: {key: value}} applied over the experiment file
  old_options: bool = False  # a paper-depth variant with only options REV has (for --compare-old-numerics)

  @property
  def folder(self) -> str:
    suffix = {"shallow": "", "paper": "_paper"}[self.depth] + ("_old_options" if self.old_options else "")
    return self.name.replace(" ", "_") + suffix


# Small enough to train a few hundred steps in minutes on 2 CPU cores.
SHALLOW = (
  Model("digits", "shallow", "digits.py", {"train": {"eval_passes": 0}}),
  Model(
    "pydoc text",
    "shallow",
    "local_text.py:pydoc",
    {
      "data": {"seq_len": 64},
      "model": {"emb_dim": 128, "mlp_dim": 512},
      "optim": {"warmup_steps": 100},
      "train": {"eval_passes": 0, "log_every": 100},
    },
  ),
)
# experiments/cifar10.py's U-Net wiring (num_res_blocks=32, attention after every block and in the middle, one
# head, the official input layer with the id embedding at ch/4, no dropout) at ch=32 on 8x8 digits, where the 66
# attention layers are cheap. A higher learning rate and a short warm-up than cifar10.py's so a few hundred steps
# leave the model clearly better than uniform (4.09 bits/dim).
PAPER_UNET = {
  "model": {
    "ch": 32,
    "num_res_blocks": 32,
    "attention": True,
    "num_heads": 1,
    "input_numeric": True,
    "input_embed_dim": 8,
    "dropout": 0.0,
  },
  "optim": {"learning_rate": 1e-3, "warmup_steps": 30, "schedule": "cosine"},
  "train": {"eval_passes": 0, "log_every": 50},
}
# experiments/text8.py's Transformer (12 layers, sinusoidal positions, neither t nor the mask as inputs, no rotary
# positions) at width 64, 4 heads, MLP 256, on pydoc text crops of text8's 250 characters.
PAPER_TRANSFORMER = {
  "data": {"seq_len": 250},
  "model": {
    "num_layers": 12,
    "emb_dim": 64,
    "mlp_dim": 256,
    "num_heads": 4,
    "rope": False,
    "positions": "sinusoidal",
    "time_input": False,
    "mask_input": False,
  },
  "optim": {"learning_rate": 1e-3, "warmup_steps": 50, "schedule": "cosine"},
  "train": {"eval_passes": 0, "log_every": 50},
}
PAPER = (
  Model("digits", "paper", "digits.py", PAPER_UNET),
  Model("pydoc text", "paper", "local_text.py:pydoc", PAPER_TRANSFORMER),
)


def _with_model_options(updates: dict, **options) -> dict:
  return {**updates, "model": {**updates["model"], **options}}


# The same networks with the options an older revision has (--compare-old-numerics).
PAPER_OLD_OPTIONS = (
  Model("digits", "paper", "digits.py", _with_model_options(PAPER_UNET, input_numeric=False), old_options=True),
  Model(
    "pydoc text",
    "paper",
    "local_text.py:pydoc",
    _with_model_options(PAPER_TRANSFORMER, positions="learned", time_input=True, mask_input=True),
    old_options=True,
  ),
)


def _config(model: Model, steps: int):
  config = configs.load_config_file(os.path.join(REPO, "experiments", model.config_file))
  with config.unlocked():  # network options the experiment file leaves at their defaults are added here
    for group, values in model.updates.items():
      config[group].update(values)
    config.train.update(num_steps=steps, checkpoint_every=steps)
  return config


def _trained(model: Model, steps: int, path: str):
  if not (os.path.isfile(os.path.join(path, train.CONFIG_FILE)) and workdir.open_workdir(path).step >= steps):
    train.train_and_evaluate(_config(model, steps), path)  # trains, or resumes (refuses a workdir of another config)
  return workdir.open_workdir(path)


def _setup(trained, dtype: str):
  config = trained.config.copy_and_resolve_references()
  with config.unlocked():
    config.model.dtype = dtype  # the experiment configs may leave the key at the network's default
  return build_setup(config, trained.spec)  # same parameter tree: only the compute dtype differs


def _per_item_bpd(setup, params, items, passes: int, seed: int) -> np.ndarray:
  with setup.context():
    result = held_out.evaluate_params(
      setup, params, items, passes=passes, batch_size=int(setup.config.train.eval_batch_size), seed=seed
    )
  return np.asarray(result["per_item"], np.float64)


def _git(*args: str) -> str:
  return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def load_old_nets(rev: str):
  """The ardm_jax/nets package of git revision `rev`, imported from a temporary copy (its imports of
  ardm_jax.nets redirected to the copy; everything else it imports is this checkout's)."""
  try:
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
  except subprocess.CalledProcessError as err:
    raise ValueError(
      f"--compare-old-numerics {rev!r} is not a git revision of this repository; pass e.g. 29f7dbf^"
    ) from err
  package = f"ardm_nets_{commit[:12]}"
  folder = tempfile.mkdtemp(prefix="old_nets_")
  os.makedirs(os.path.join(folder, package))
  for path in _git("ls-tree", "--name-only", commit, "ardm_jax/nets/").split():
    if path.endswith(".py"):
      source = _git("show", f"{commit}:{path}").replace("ardm_jax.nets", package)
      with open(os.path.join(folder, package, os.path.basename(path)), "w", encoding="utf-8") as f:
        f.write(source)
  sys.path.insert(0, folder)
  return importlib.import_module(package), commit


def old_numerics_setup(old_nets, setup, params):
  """`setup` with the old revision's network, or (None, why) when that revision cannot build the same one.

  An option the old revision lacks is dropped when it has this checkout's default value (its behaviour then is
  the old one); any other value makes the comparison meaningless. The parameter trees must match exactly.
  """
  cfg = dict(setup.config.model.items())
  name = cfg["name"]
  old_spec = old_nets._SPECS[name]  # pylint: disable=protected-access
  defaults = nets._SPECS[name]["optional"]  # pylint: disable=protected-access
  for key in sorted(set(cfg) - {"name"} - set(old_spec["required"]) - set(old_spec["optional"])):
    if key in defaults and cfg[key] == defaults[key]:
      del cfg[key]
    else:
      return None, f"model.{key}={cfg[key]!r} is not in that revision"
  model, spec = setup.objective, setup.spec
  net = old_nets.build_network(
    cfg,
    spec.shape,
    spec.num_classes,
    num_outputs=model.num_outputs,
    num_input_classes=model.num_input_classes,
    num_steps=model.num_net_steps(spec.num_steps),
  )
  x, t = jnp.zeros((1,) + spec.shape, jnp.int32), jnp.zeros((1,), jnp.int32)
  with setup.context():
    shapes = jax.eval_shape(lambda: net.init({"params": jax.random.PRNGKey(0)}, x, x > 0, t, train=False)["params"])
  shapes = jax.tree.map(lambda a: a.shape, nn.unbox(shapes))
  if shapes != jax.tree.map(lambda a: a.shape, params):
    return None, "the parameter trees differ"
  return dataclasses.replace(setup, net=net, apply_fn=make_apply_fn(net)), ""


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def _blocks(config) -> str:
  m = config.model
  if m.name == "unet":
    return f"{2 * int(m.num_res_blocks) + 3} Res + {2 * int(m.num_res_blocks) + 2 if m.attention else 0} Attn"
  return f"{int(m.num_layers)} layers"


def _options(config) -> str:
  m = config.model
  if m.name == "unet":
    return f"ch {m.ch}, input_numeric={bool(m.get('input_numeric', False))}"
  if m.get("rope", False):
    return f"width {m.emb_dim}, rope"
  return f"width {m.emb_dim}, {m.get('positions', 'learned')}" + (
    "" if m.get("time_input", True) else ", no t/mask input"
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="folder for the trained models (reused when present)")
  parser.add_argument("--depth", choices=("shallow", "paper", "all"), default="all", help="which models (docstring)")
  parser.add_argument("--steps", type=int, default=300, help="training steps per shallow model")
  parser.add_argument("--paper-steps", type=int, default=120, help="training steps per paper-depth model")
  parser.add_argument("--passes", type=int, default=4, help="evaluation passes per test item")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--compare-old-numerics",
    metavar="REV",
    default=None,
    help="also evaluate bf16 with the networks of git revision REV, e.g. 29f7dbf^",
  )
  args = parser.parse_args()
  start_all = time.time()
  print(
    f"commit {_git('rev-parse', '--short', 'HEAD').strip()}, {time.strftime('%Y-%m-%d %H:%M')}, "
    f"{os.cpu_count()} CPU cores, 1-minute load {os.getloadavg()[0]:.1f} at the start",
    flush=True,
  )
  old_nets, old_commit = load_old_nets(args.compare_old_numerics) if args.compare_old_numerics else (None, "")
  models = (SHALLOW if args.depth in ("shallow", "all") else ()) + (PAPER if args.depth in ("paper", "all") else ())
  if old_nets is not None and args.depth in ("paper", "all"):
    models += PAPER_OLD_OPTIONS
  old_header = f" | bf16 {old_commit[:7]} numerics - fp32 (paired)" if old_nets else ""
  rows = [
    f"| data | network | depth | options | train steps | test items x passes | bpd fp32 | bpd bf16 "
    f"| bf16 - fp32 (paired){old_header} | s |",
    "|---" * (10 + bool(old_nets)) + "|",
  ]
  for model in models:
    start = time.time()
    steps = args.steps if model.depth == "shallow" else args.paper_steps
    trained = _trained(model, steps, os.path.join(args.workdir, model.folder))
    items = data.load(trained.config.data).eval_items("test")
    setup_bf16 = _setup(trained, "bfloat16")
    fp32 = _per_item_bpd(_setup(trained, "float32"), trained.params, items, args.passes, args.seed)
    bf16 = _per_item_bpd(setup_bf16, trained.params, items, args.passes, args.seed)
    (m32, s32), (m16, s16), (diff, sdiff) = _mean_stderr(fp32), _mean_stderr(bf16), _mean_stderr(bf16 - fp32)
    old_cell = ""
    if old_nets is not None:
      setup_old, why_not = old_numerics_setup(old_nets, setup_bf16, trained.params)
      if setup_old is None:
        old_cell = f" | n/a ({why_not})"
      else:
        old = _per_item_bpd(setup_old, trained.params, items, args.passes, args.seed)
        old_cell = " | {:+.5f} ± {:.5f}".format(*_mean_stderr(old - fp32))
    rows.append(
      f"| {model.name} | {trained.config.model.name} | {_blocks(trained.config)} | "
      f"{_options(trained.config)} | {trained.step} | {len(items)} x {args.passes} | "
      f"{m32:.4f} ± {s32:.4f} | {m16:.4f} ± {s16:.4f} | {diff:+.5f} ± {sdiff:.5f}{old_cell} | "
      f"{time.time() - start:.0f} |"
    )
    print(f"  {model.folder}: done in {time.time() - start:.0f} s\n{rows[-1]}", file=sys.stderr, flush=True)
  print("\n".join(rows))
  print(f"total {time.time() - start_all:.0f} s")


if __name__ == "__main__":
  main()
