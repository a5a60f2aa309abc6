"""A jax.profiler trace of chosen train steps (`train.profile_steps`, e.g. "100:105").

The trace goes into the workdir as `plugins/profile/RUN/HOST.xplane.pb` (and `HOST.trace.json.gz`), where
TensorBoard's profile tab and XProf find it: `pip install xprof`, then `xprof --logdir=W --port=8791` or
`tensorboard --logdir W` (Profile). Steps are left to run asynchronously while traced; ending the trace waits for
the last traced step, so the device work of every traced step is in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


class StepTrace:
  """Starts a trace when the run reaches step A and stops it at step B (steps counted as completed updates).

  Used as a context manager around the training loop, so a run that stops early (SIGTERM, divergence, a pause
  before B) still ends its trace and writes it.
  """

  def __init__(self, steps: tuple[int, int] | None, logdir: str, enabled: bool, log: Callable):
    """`steps`: (A, B) from configs.profile_steps, or None; `enabled`: whether this process traces."""
    self.steps, self.logdir, self.log = (steps if enabled else None), str(logdir), log
    self.active, self.first, self.last = False, None, None

  def before_step(self, step: int) -> None:
    """Call before dispatching the update that takes the run from `step` to step + 1."""
    if self.steps is not None and not self.active and self.steps[0] <= step < self.steps[1]:
      jax.profiler.start_trace(self.logdir)
      self.active, self.first = True, step

  def after_step(self, step: int, outputs: Any) -> None:
    """Call after dispatching it (`step` now counts it): ends the trace at step B, once `outputs` are ready."""
    self.last = step
    if self.active and step >= self.steps[1]:
      self.stop(step, outputs)

  def stop(self, step: int, outputs: Any = None) -> None:
    """Ends an active trace after waiting for `outputs`, and says where it went."""
    if not self.active:
      return
    jax.block_until_ready(outputs)
    jax.profiler.stop_trace()
    self.active, self.steps = False, None  # one trace per run segment
    self.log(f"profile of steps {self.first}-{step} written to {self.logdir}/plugins/profile", flush=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.stop(self.last)
