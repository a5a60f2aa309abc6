"""The values of a training config, checked before a run writes, compiles or initialises anything.

`ardm train` calls `check_run_values` right after reading the config and its overrides, so a bad value is refused in
a second and leaves no trace in the workdir (a workdir holding a config is bound to it: a corrected rerun would
otherwise be refused as "a different config"). The checks that need the network or the devices (the objective,
the mesh, batch divisibility, parameter shardings) run in `train.train_and_evaluate`, also before the workdir is
written.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from ardm_jax import configs

T_SAMPLINGS = ("uniform", "stratified")
SCHEDULES = ("constant", "cosine")


def _integer(config: ml_collections.ConfigDict, key: str, minimum: int, hint: str = "") -> None:
  value = _get(config, key)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"--config.{key} must be an integer >= {minimum}{hint}, got {value!r}")


def _number(config: ml_collections.ConfigDict, key: str, low: float, high: float, *, open_high: bool = False) -> None:
  value = _get(config, key)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and low <= value and (value < high if open_high else value <= high)
  if not ok:
    bracket = ")" if open_high else "]"
    raise ValueError(f"--config.{key} must be a number in [{low:g}, {high:g}{bracket}, got {value!r}")


def _choice(config: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> None:
  value = _get(config, key)
  if value not in choices:
    raise ValueError(f"--config.{key} must be one of {', '.join(choices)}, got {value!r}")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def check_run_values(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one line naming the key and what it takes, any train/optim/ardm value a run cannot use.

  Args:
    config: a full experiment config (`configs.load_config_file` plus overrides).

  Raises:
    ValueError: the first bad value.
  """
  _integer(config, "seed", 0)
  _integer(config, "train.batch_size", 1)
  _integer(config, "train.num_steps", 1)
  _integer(config, "train.log_every", 1)
  _integer(config, "train.checkpoint_every", 1)
  _integer(config, "train.keep_checkpoints", 1)
  _integer(config, "train.eval_passes", 0, " (0 = no test evaluation at the end)")
  _integer(config, "train.eval_batch_size", 1)
  _integer(config, "train.eval_every", 0, " (0 = no held-out evaluation while training)")
  if _get(config, "train.eval_every") > 0:
    _integer(config, "train.eval_items", 2, " (a standard error needs two items)")
  _integer(config, "train.lt_window", 1, " samples per step (the default is 1000)")
  configs.profile_steps(config)
  _number(config, "optim.learning_rate", 0.0, math.inf)
  _integer(config, "optim.warmup_steps", 0)
  _choice(config, "optim.schedule", SCHEDULES)
  _number(config, "optim.b1", 0.0, 1.0, open_high=True)
  _number(config, "optim.b2", 0.0, 1.0, open_high=True)
  _number(config, "optim.clip_norm", 0.0, math.inf)
  _number(config, "optim.weight_decay", 0.0, math.inf)
  _number(config, "optim.ema_decay", 0.0, 1.0)
  _choice(config, "ardm.t_sampling", T_SAMPLINGS)
  _number(config, "ardm.ce_weight", 0.0, math.inf)
