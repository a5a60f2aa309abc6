"""Orbax checkpoints of the train state plus JSON metadata (step, config hash, best evaluation); the step is also
the data position, since the batch of step s is a pure function of (seed, s).

Nothing is pickled: arrays go through orbax's array format, metadata through its JSON handler. The manager keeps
the latest `keep` checkpoints plus the one with the lowest held-out bits/dim (`EVAL_METRIC`, saved with the
checkpoints of evaluation steps, see train.eval_every).
"""

from __future__ import annotations

import logging
from typing import Any

from etils import epath
import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
EVAL_METRIC = "eval_bpd"


class _SavesBetweenEvaluations(logging.Filter):
  """Checkpoints between evaluations carry no metric on purpose; orbax would warn about each one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_SavesBetweenEvaluations())


def _eval_metric(metrics: dict) -> float:
  return float(metrics[EVAL_METRIC])


def make_manager(workdir: str, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  preservation = policies.AnyPreservationPolicy(
    [
      policies.LatestN(n=keep),
      # Lowest bits/dim first (reverse); checkpoints without a metric are left to LatestN, so they rotate out.
      policies.BestN(get_metric_fn=_eval_metric, reverse=True, n=1, keep_checkpoints_without_metrics=False),
    ]
  )
  # best_fn makes orbax write each checkpoint's metric to disk, so best_step() and BestN work after a restart.
  options = ocp.CheckpointManagerOptions(
    create=True,
    enable_async_checkpointing=async_save,
    preservation_policy=preservation,
    best_fn=_eval_metric,
    best_mode="min",
  )
  return ocp.CheckpointManager(
    epath.Path(workdir).absolute() / CHECKPOINT_DIR, options=options, item_names=("state", "meta")
  )


def save(
  manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False, eval_bpd: float | None = None
) -> bool:
  """`eval_bpd`: the held-out bits/dim of this state, when this step was evaluated (ranks it for the best)."""
  metrics = None if eval_bpd is None else {EVAL_METRIC: float(eval_bpd)}
  return manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=force,
    metrics=metrics,
  )


def best_step(manager: ocp.CheckpointManager) -> int | None:
  """The kept checkpoint with the lowest held-out bits/dim, or None when no saved step was evaluated."""
  return manager.best_step()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: orbax restores straight onto the current mesh."""
  return jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings
  )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any) -> tuple[Any, dict]:
  target = abstract_with_shardings(abstract_state, shardings)
  restored = manager.restore(
    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
  )
  return restored["state"], dict(restored["meta"])


def restore_fields(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any, fields: tuple[str, ...]
) -> dict:
  """Only the named top-level fields of a saved train state, e.g. ('ema_params',): {field: restored tree}.

  An orbax partial restore: only those arrays are read (a job that evaluates the EMA parameters reads about a
  quarter of an Adam train state's bytes), each straight onto its sharding from `shardings`, as in `restore`.
  """
  target = {name: abstract_with_shardings(getattr(abstract_state, name), getattr(shardings, name)) for name in fields}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  restored = manager.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)),
  )
  return {name: restored["state"][name] for name in fields}


def latest_step(workdir: str) -> int | None:
  if not (epath.Path(workdir) / CHECKPOINT_DIR).is_dir():
    return None
  manager = make_manager(workdir, async_save=False)
  try:
    return manager.latest_step()
  finally:
    manager.close()
