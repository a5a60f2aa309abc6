"""Opening a trained workdir for the jobs (eval, sample, inpaint, policy, compress).

Jobs restore only what they use from a checkpoint: the EMA (or raw) parameters, or the L_t tracker; never the
optimizer state (with Adam twice the parameters again) or the other copy of the parameters. This module imports
neither the trainer nor TensorFlow; `load_config` only reads JSON.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from etils import epath
import jax
import numpy as np

from ardm_jax import checkpoint, configs, sharding
from ardm_jax.configs import CONFIG_FILE, DATA_SPEC_FILE, config_hash
from ardm_jax.train_state import DataSpec, Setup, build_setup


@dataclasses.dataclass
class TrainedModel:
  workdir: str
  setup: Setup
  params: Any
  step: int
  params_kind: str  # 'ema' or 'raw'
  config_hash: str
  # 'workdir', or 'model' for a folder written by `ardm export` (ardm_jax/model_dir.py; `workdir` is that folder)
  source: str = "workdir"

  def policy_command(self, budgets) -> str:
    """The command (in backticks) that writes this model's policy file; a model folder is never written into."""
    if self.source == "workdir":
      return f"`ardm policy --workdir {self.workdir} --budgets {budgets}`"
    return f"`ardm policy --model {self.workdir} --budgets {budgets} --out policy.json` (then --policy policy.json)"

  @property
  def spec(self) -> DataSpec:
    return self.setup.spec

  @property
  def config(self):
    return self.setup.config


def open_workdir(workdir: str, use_ema: bool = True, step: int | str | None = None, devices=None) -> TrainedModel:
  """The model of checkpoint `step`: the latest when None, 'best' for the lowest held-out bits/dim recorded while
  training (train.eval_every), or a step number; on a mesh of `devices` (default all): the training mesh where it
  fits them, else the nearest that does (sharding.mesh_for_devices), so a run trained on 16 devices opens on 3."""
  config = load_config(workdir)
  spec = DataSpec.from_json(json.loads((epath.Path(workdir) / DATA_SPEC_FILE).read_text()))
  num_devices = len(jax.devices() if devices is None else devices)
  setup = build_setup(config, spec, devices, mesh_sizes=sharding.mesh_for_devices(config.mesh, num_devices))
  field = "ema_params" if use_ema else "params"
  manager = checkpoint.make_manager(workdir, async_save=False)
  try:
    step = _resolve_step(manager, workdir, step)
    # Restored straight onto the parameters' layout: under ZeRO-1 (mesh.zero1) the EMA is saved split over the
    # data axis, and the jobs' jitted functions should see the layout they would for the parameters.
    shardings = setup.state_shardings.replace(ema_params=setup.state_shardings.params)
    params = checkpoint.restore_fields(manager, step, setup.abstract_state, shardings, (field,))[field]
  finally:
    manager.close()
  return TrainedModel(
    workdir=workdir,
    setup=setup,
    params=params,
    step=int(step),
    params_kind="ema" if use_ema else "raw",
    config_hash=config_hash(config),
  )


def load_config(workdir: str):
  """The config a workdir was trained with (config.json; JSON only, nothing is built)."""
  config_path = epath.Path(workdir) / CONFIG_FILE
  if not config_path.is_file():
    raise ValueError(
      f"{workdir} is not a training workdir (no {CONFIG_FILE}); train first with "
      f"`ardm train --config ... --workdir {workdir}`"
    )
  config = configs.config_from_json(config_path)
  if config.get("format") == configs.MODEL_FORMAT:
    raise ValueError(f"{workdir} is an exported model folder, not a training workdir; pass it as --model")
  return config


def _resolve_step(manager, workdir: str, step: int | str | None) -> int:
  if manager.latest_step() is None:
    raise ValueError(f"{workdir} has no checkpoint yet; run `ardm train` on it first")
  if step is None:
    return manager.latest_step()
  if step == "best":
    best = checkpoint.best_step(manager)
    if best is None:
      raise ValueError(f"{workdir}: no held-out evaluation was recorded; train with --config.train.eval_every=N")
    return best
  if int(step) not in manager.all_steps():
    raise ValueError(
      f"{workdir} has no checkpoint at step {step}; it keeps steps {sorted(manager.all_steps())} "
      "(and 'best' when it evaluated while training)"
    )
  return int(step)


def restore_tracker(model: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
  """The running L_t saved during training at the model's step (bits per variable, NaN where a step has seen no
  sample; see train.update_lt_tracker) and how many samples each step has seen; only these two small arrays are
  read from the checkpoint."""
  manager = checkpoint.make_manager(model.workdir, async_save=False)
  try:
    fields = checkpoint.restore_fields(
      manager, model.step, model.setup.abstract_state, model.setup.state_shardings, ("lt_mean", "lt_count")
    )
  finally:
    manager.close()
  counts = np.asarray(jax.device_get(fields["lt_count"]))
  means = np.asarray(jax.device_get(fields["lt_mean"]))
  return np.where(counts > 0, means, np.nan), counts
