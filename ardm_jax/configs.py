"""Loading experiment configs (`path.py[:arg]`) and applying `--config.key=value` overrides.

Configs are locked after loading, so a misspelt key is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
import hashlib
import importlib.util
import json
import os
from typing import Any

from etils import epath
import ml_collections

# The mesh axes and the default sharding rules are data (ardm_jax/sharding.py applies them); they live here so
# that building a config imports no JAX.
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Parameters are split over `fsdp` along their model width and over `tensor` along the MLP and heads axes;
# the batch is split over `data` x `fsdp`. Every logical name used by the networks must appear here.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", BATCH_AXES),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("kv", None),
  ("vocab", None),
  ("conv_h", None),
  ("conv_w", None),
  ("conv_in", None),
  ("length_pos", None),
  ("time", None),
  ("act_length", None),
  ("act_height", None),
  ("act_width", None),
  ("act_embed", None),
  ("act_mlp", "tensor"),
  ("act_heads", "tensor"),
  ("act_kv", None),
  ("act_classes", None),
  ("layers", None),  # the stacked axis of scanned layers (model.scan_layers): every device holds all layers
)

CONFIG_PREFIX = "--config."
# What `ardm train` writes into a workdir beside the checkpoints (read back by every job; see ardm_jax/workdir.py).
CONFIG_FILE = "config.json"
DATA_SPEC_FILE = "data_spec.json"
# The DP policies of `ardm policy` (a workdir's and a model folder's default policy file).
POLICY_FILE = "policy.json"
# Each `ardm train` command run on a workdir, one line each (the model card of an export quotes them).
TRAIN_COMMANDS_FILE = "train_commands.txt"
# The `format` of an exported model folder's config.json (ardm_jax/model_dir.py); a workdir's config.json has none.
MODEL_FORMAT = "ardm_jax.model"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Runs get_config(arg) of a config file given as 'path/to/file.py' or 'path/to/file.py:arg'."""
  path, _, arg = spec.partition(":")
  config = experiment_config(path, arg or None)
  config.lock()
  return config


def experiment_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config(arg) of an experiment file, unlocked: also how one experiment builds on another
  (`experiment_config(os.path.join(os.path.dirname(__file__), 'digits.py'))`), independent of the cwd."""
  if not path.endswith(".py") or not os.path.isfile(path):
    raise ValueError(f"config file {path!r} not found; pass e.g. --config experiments/digits.py")
  module_spec = importlib.util.spec_from_file_location(f"ardm_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config() function")
  return module.get_config(arg) if arg else module.get_config()


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word such as a data set name


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies ['--config.a.b=1', ...] (also '--config.a.b 1' split over two items) to `config` IN PLACE and returns
  it: deep-copy first to keep the original."""
  items = list(overrides)
  i = 0
  while i < len(items):
    item = items[i]
    if not item.startswith(CONFIG_PREFIX):
      raise ValueError(f"unexpected argument {item!r}; config overrides look like --config.train.num_steps=100")
    key, eq, value = item[len(CONFIG_PREFIX) :].partition("=")
    if not eq:
      if i + 1 >= len(items):
        raise ValueError(f"{item} needs a value: {item}=VALUE")
      value, i = items[i + 1], i + 1
    set_key(config, key, _parse_value(value))
    i += 1
  return config


def set_key(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  node = config
  parts = dotted.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:depth]) or "the config"
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ValueError(f"unknown config key {dotted!r}: {where} has no field {part!r} (valid: {', '.join(valid)})")
    if depth < len(parts) - 1:
      node = node[part]
  current = node[parts[-1]]
  if isinstance(current, ml_collections.ConfigDict):
    raise ValueError(f"config key {dotted!r} is a group; set one of its fields, e.g. --config.{dotted}.FIELD=...")
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError) as err:
    raise ValueError(
      f"--config.{dotted}={value!r} has the wrong type for this field (currently {current!r}: {type(current).__name__})"
    ) from err


def config_from_json(path) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(json.loads(epath.Path(path).read_text()))
  config.lock()
  return config


def base_config() -> ml_collections.ConfigDict:
  """Settings shared by every experiment; each experiment file fills in data, model and sizes."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Persistent JAX compilation cache (ardm_jax/compile_cache.py): None = the user cache directory
  # (~/.cache/ardm_jax/jax_cache), a path or gs:// URL to share compiled programs across jobs, '' = off. The
  # environment variable ARDM_COMPILE_CACHE overrides it (jobs read the config their workdir was trained with).
  config.compile_cache_dir = None
  config.data = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict()
  config.ardm = ml_collections.ConfigDict(
    dict(
      t_sampling="stratified",  # 'uniform' or 'stratified' (the official 'antithetic')
      ce_weight=1e-3,  # unweighted cross-entropy term (official: 1e-3 images, 1e-4 text/audio)
      # The model (see ardm_jax/objective.py): OA-ARDM or upscale stages, parametrisation, output distribution.
      upscale="none",
      branch_factor=2,
      parametrisation="data",
      output="categorical",
      num_mixtures=30,
      # 'ardm', or a baseline of the paper in the same trainer: 'arm' (single order, causal network) or
      # 'd3pm_absorbing' with diffusion_steps T.
      objective="ardm",
      diffusion_steps=1000,
    )
  )
  config.optim = ml_collections.ConfigDict(
    dict(
      learning_rate=1e-4,
      schedule="constant",
      warmup_steps=1000,
      b1=0.9,
      b2=0.999,
      clip_norm=100.0,
      weight_decay=0.0,
      ema_decay=0.9999,
      # The EMA decay warms up as min(ema_decay, (1 + n) / (10 + n)) at step n, so a short run does not carry its
      # initial parameters: after the 600 steps of experiments/digits.py a constant 0.999 would still give them
      # weight 0.999^600 = 0.55. False: a constant decay from step 0, as the official code (the paper configs).
      # Configs without the key (older workdirs) warm up.
      ema_warmup=True,
    )
  )
  config.train = ml_collections.ConfigDict(
    dict(
      batch_size=128,
      num_steps=100_000,
      log_every=100,
      checkpoint_every=5000,
      keep_checkpoints=3,
      eval_passes=1,
      eval_batch_size=256,
      # Held-out progress while training: every `eval_every` steps (0 = off) the EMA parameters are evaluated on
      # a fixed subset of `eval_items` held-out items, and the best checkpoint by that number is kept.
      eval_every=0,
      eval_items=1024,
      # The running L_t tracker (for `ardm policy --use-tracker`) is an exact mean over each step's first
      # `lt_window` samples, then an exponential average over about that many: it follows the model as it learns
      # and never loses precision in float32, however long the run.
      lt_window=1000,
      # A jax.profiler trace of the train steps from A to B ("A:B": the B - A steps that take the run from step A
      # to step B), written into the workdir for TensorBoard's profile tab and XProf; '' = none. Only process 0
      # traces unless profile_all_processes.
      profile_steps="",
      profile_all_processes=False,
    )
  )
  # Mesh sizes for (data, fsdp, tensor); one may be -1 to take the remaining devices.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # ZeRO-1: the optimizer state and EMA parameters split over the `data` axis (the parameters keep their layout);
  # the same training, with 1/data of that state on each device. Checkpoints restore with it on or off.
  config.mesh.zero1 = False
  config.sharding_rules = tuple((name, axes) for name, axes in DEFAULT_RULES)
  return config


def shrink_network(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config's network at a size that runs in seconds on a CPU; every other option (inputs, dtype, remat,
  positions) and the data shape stay as they are. Widths are multiples of 16 so the usual mesh axes divide them."""
  if config.model.name == "unet":
    config.model.update(ch=16, num_res_blocks=1, input_embed_dim=4)
  elif config.model.name == "transformer":
    config.model.update(num_layers=1, emb_dim=32, mlp_dim=64, num_heads=2)
  elif config.model.name == "diffwave":
    config.model.update(num_blocks=2, features=16, dilation_cycle=2)
  return config


def shrink_to_tiny(
  config: ml_collections.ConfigDict, *, batch_size: int = 4, num_steps: int = 2, eval_passes: int = 0
) -> ml_collections.ConfigDict:
  """The `:tiny` variant of any experiment: same data and code paths, a seconds-long model and run."""
  shrink_network(config)
  if config.model.name == "transformer":
    config.data.seq_len = 32
  elif config.model.name == "diffwave":
    config.data.length = 64
  for key, value in (("dtype", "float32"), ("remat", False)):
    if key in config.model:
      config.model[key] = value
  config.train.update(
    batch_size=batch_size, num_steps=num_steps, log_every=1, checkpoint_every=2, eval_passes=eval_passes
  )
  return config


# Keys that say where things run, not what is trained: they may differ when a run resumes, and stay out of the
# config hash (so of model fingerprints: a file compressed before the cache folder moved still decodes).
RUN_NEUTRAL_KEYS = ("compile_cache_dir",)


def config_hash(config: ml_collections.ConfigDict) -> str:
  """Short hash of the whole config but RUN_NEUTRAL_KEYS (recorded in checkpoints, eval results, policy files and
  containers)."""
  if any(key in config for key in RUN_NEUTRAL_KEYS):
    config = ml_collections.ConfigDict(config.to_dict())
    with config.unlocked():
      for key in RUN_NEUTRAL_KEYS:
        if key in config:
          del config[key]
  return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def lt_window(config: ml_collections.ConfigDict) -> int:
  """train.lt_window, checked: the running L_t tracker's window in samples per step."""
  window = int(config.train.lt_window)
  if window < 1:
    raise ValueError(
      f"train.lt_window must be at least 1 sample per step, got {window}; "
      "set --config.train.lt_window=1000 (the default)"
    )
  return window


def profile_steps(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """train.profile_steps, checked: (A, B) with 0 <= A < B for "A:B", None for '' (or a config without the key)."""
  text = config.train.get("profile_steps", "")
  if text in ("", None):
    return None
  start, colon, end = str(text).partition(":")
  if colon and start.strip().isdigit() and end.strip().isdigit() and int(start) < int(end):
    return int(start), int(end)
  raise ValueError(
    f"--config.train.profile_steps must be 'A:B' with 0 <= A < B (trace the steps from A to B), or '' for none; "
    f"got {text!r}"
  )


def ema_warmup(config: ml_collections.ConfigDict) -> bool:
  """optim.ema_warmup; True (the warm-up every run had before the option existed) where a config lacks it."""
  return bool(config.optim.get("ema_warmup", True))


def lt_tracker_name(config: ml_collections.ConfigDict) -> str:
  """Which estimator the training tracker is (recorded in policy.json by `ardm policy --use-tracker`)."""
  return f"tracker (running mean, window {lt_window(config)} samples per step)"
