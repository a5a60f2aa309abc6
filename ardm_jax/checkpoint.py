"""Orbax checkpoints of the train state plus JSON metadata (step, data position, config hash).

Nothing is pickled: arrays go through orbax's array format, metadata through its JSON handler.
"""
from __future__ import annotations

from typing import Any

import jax
from etils import epath
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def make_manager(workdir: str, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(epath.Path(workdir).absolute() / CHECKPOINT_DIR, options=options,
                               item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=force)


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: orbax restores straight onto the current mesh."""
  return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                      abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, shardings: Any) -> tuple[Any, dict]:
  target = abstract_with_shardings(abstract_state, shardings)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                           meta=ocp.args.JsonRestore()))
  return restored["state"], dict(restored["meta"])


def latest_step(workdir: str) -> int | None:
  if not (epath.Path(workdir) / CHECKPOINT_DIR).is_dir():
    return None
  manager = make_manager(workdir, async_save=False)
  try:
    return manager.latest_step()
  finally:
    manager.close()
