"""The one trainer: `train_and_evaluate(config, workdir)` for every data set, network and mesh.

One module-level `train_step` is compiled once with explicit shardings (state donated); the same code runs
on 1 or N devices and on several hosts. Randomness per step is `fold_in(key, step)` and the data batch of
step s is a pure function of (seed, s), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import functools
import json
import signal
import time
from typing import Any

from clu import metric_writers, periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ardm_jax import (
  ardm,
  checkpoint,
  config_checks,
  configs,
  data,
  goodput,
  held_out,
  objective,
  profiling,
  progress,
  sharding,
)
from ardm_jax.configs import CONFIG_FILE, DATA_SPEC_FILE, config_hash, lt_window  # noqa: F401  (re-exported)
from ardm_jax.train_state import DataSpec, Setup, TrainState, build_setup, count_params


def loss_fn(params, batch: jax.Array, key: jax.Array, *, apply_fn, spec, t_sampling: str, ce_weight: float):
  """Training loss in bits/dim: the model's bound (the ARDM's summed over upscale stages; a baseline's, see
  objective.loss_terms) plus `ce_weight` times the unweighted cross-entropy."""
  num_dims = int(np.prod(batch.shape[1:]))
  terms = objective.loss_terms(spec, apply_fn, params, batch, key, t_sampling=t_sampling, train=True)
  bpd = jnp.mean(ardm.bits_per_dim(terms["nll"], num_dims))
  ce = jnp.mean(ardm.bits_per_dim(terms["ce"], num_dims))
  return bpd + ce_weight * ce, (terms, bpd, ce)


def update_lt_tracker(
  mean_T: jax.Array, count_T: jax.Array, batch_sum_T: jax.Array, batch_count_T: jax.Array, window: float
) -> tuple[jax.Array, jax.Array]:
  """One batch into the running L_t: each step t moves towards this batch's mean by c_t / min(n_t + c_t, window).

  Below `window` samples that is the exact running mean; beyond it an exponential average over about `window`
  samples, so the estimate follows the model as it learns (early, high losses are forgotten). Unlike float32
  running sums, which round away increments once a sum is ~2^24 times larger than them, each update is a small
  correction of a number near L_t and stays accurate however long the run. The count only decides when the
  window is reached (float32 counts stop growing at 2^24 per step, far beyond any window).
  """
  batch_mean_T = batch_sum_T / jnp.maximum(batch_count_T, 1e-12)
  # A batch with more than `window` samples of one step replaces that step's mean outright (rate 1).
  denominator_T = jnp.maximum(jnp.minimum(count_T + batch_count_T, window), batch_count_T)
  rate_T = jnp.where(batch_count_T > 0, batch_count_T / jnp.maximum(denominator_T, 1e-12), 0.0)
  return mean_T + rate_T * (batch_mean_T - mean_T), count_T + batch_count_T


def train_step(
  state: TrainState,
  batch: jax.Array,
  base_key: jax.Array,
  *,
  apply_fn,
  tx,
  spec,
  t_sampling: str,
  ce_weight: float,
  ema_decay: float,
  lt_window: float,
  ema_warmup: bool = True,
) -> tuple[TrainState, dict]:
  """One optimisation step; the per-step randomness is fold_in(base_key, step).

  The EMA decay is `ema_decay`, or with `ema_warmup` min(ema_decay, (1 + n) / (10 + n)) at step n (configs.ema_warmup).
  """
  key = jax.random.fold_in(base_key, state.step)
  grad_fn = jax.value_and_grad(
    functools.partial(loss_fn, apply_fn=apply_fn, spec=spec, t_sampling=t_sampling, ce_weight=ce_weight), has_aux=True
  )
  (loss, (terms, bpd, ce)), grads = grad_fn(state.params, batch, key)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if ema_warmup:
    step_f = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + step_f) / (10.0 + step_f))
  else:
    decay = jnp.float32(ema_decay)
  ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
  # Tracker entries: one per example (ARDMs, D3PM) or per position (ARM); D3PM weighs out draws with no mask.
  lt_weight = terms.get("lt_weight", jnp.ones_like(terms["lt_bits"]))
  batch_sum_T = jnp.zeros_like(state.lt_mean).at[terms["t"]].add(terms["lt_bits"] * lt_weight)
  batch_count_T = jnp.zeros_like(state.lt_count).at[terms["t"]].add(lt_weight)
  lt_mean, lt_count = update_lt_tracker(state.lt_mean, state.lt_count, batch_sum_T, batch_count_T, lt_window)
  new_state = state.replace(
    step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state, lt_mean=lt_mean, lt_count=lt_count
  )
  metrics = {
    "loss": loss,
    "bpd": bpd,
    "ce_bpd": ce,
    "grad_norm": optax.tree.norm(grads),
    "param_norm": optax.tree.norm(params),
  }
  return new_state, metrics


TRAIN_METRICS = ("loss", "bpd", "ce_bpd", "grad_norm", "param_norm")  # the scalars train_step returns


def initial_health() -> dict:
  """The divergence record the checked train step carries on device: no non-finite step yet (first_bad_step -1)
  and room for that step's metrics."""
  return {
    "first_bad_step": jnp.full((), -1, jnp.int32),
    "metrics": {k: jnp.zeros((), jnp.float32) for k in TRAIN_METRICS},
  }


def update_health(health: dict, step: jax.Array, metrics: dict) -> dict:
  """Records `step` and its metrics if they hold a NaN/Inf and no earlier step did; otherwise keeps the record.

  A non-finite parameter shows up in param_norm, a non-finite gradient in grad_norm, so the record names the first
  step whose state or update went bad.
  """
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(metrics[k])) for k in TRAIN_METRICS]))
  first = (health["first_bad_step"] < 0) & ~finite
  return {
    "first_bad_step": jnp.where(first, step.astype(jnp.int32), health["first_bad_step"]),
    "metrics": {k: jnp.where(first, metrics[k].astype(jnp.float32), health["metrics"][k]) for k in TRAIN_METRICS},
  }


def checked_train_step(
  state: TrainState, batch: jax.Array, base_key: jax.Array, health: dict, **kwargs
) -> tuple[TrainState, dict, dict]:
  """train_step plus the on-device divergence record (update_health), so the host need not fetch every step's
  metrics to notice a NaN: it reads the record whenever it fetches anyway, and before every checkpoint."""
  new_state, metrics = train_step(state, batch, base_key, **kwargs)
  return new_state, metrics, update_health(health, new_state.step, metrics)


def compile_train_step(setup: Setup, check_finite: bool = False):
  """The jitted `train_step(state, batch, key) -> (state, metrics)` with explicit shardings, state donated.

  `check_finite=True`: `checked_train_step(state, batch, key, health) -> (state, metrics, health)` instead, the
  trainer's form (the replicated health record is small and not donated, so a fetched one stays readable)."""
  cfg = setup.config
  kwargs = dict(
    apply_fn=setup.apply_fn,
    tx=setup.tx,
    spec=setup.objective,
    t_sampling=cfg.ardm.t_sampling,
    ce_weight=float(cfg.ardm.ce_weight),
    ema_decay=float(cfg.optim.ema_decay),
    ema_warmup=configs.ema_warmup(cfg),
    lt_window=float(lt_window(cfg)),
  )
  repl = sharding.replicated(setup.mesh)
  in_shardings = (setup.state_shardings, sharding.batch_sharding(setup.mesh), repl)
  if check_finite:
    return jax.jit(
      functools.partial(checked_train_step, **kwargs),
      in_shardings=in_shardings + (repl,),
      out_shardings=(setup.state_shardings, repl, repl),
      donate_argnums=(0,),
    )
  return jax.jit(
    functools.partial(train_step, **kwargs),
    in_shardings=in_shardings,
    out_shardings=(setup.state_shardings, repl),
    donate_argnums=(0,),
  )


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str, spec: DataSpec) -> dict:
  """Writes config.json / data_spec.json, or checks that a resumed workdir was made by the same config.

  Returns the config the run recorded: the workdir's config.json when it has one, else `config` as written.
  """
  root = epath.Path(workdir)  # local paths and gs:// alike
  root.mkdir(parents=True, exist_ok=True)
  path = root / CONFIG_FILE
  new = json.loads(config.to_json(sort_keys=True))
  if path.exists():
    old = json.loads(path.read_text())
    # Keys a newer release added at their defaults (the run is the same) and where the compile cache lives do not
    # make a config different.
    diffs = sorted(
      k
      for k in _diff_keys(old, new)
      if k not in configs.RUN_NEUTRAL_KEYS
      and not (_lookup(old, k) is _MISSING and _lookup(new, k) == _lookup(_defaults(), k))
    )
    if diffs:
      raise ValueError(
        f"workdir {workdir} holds a run with a different config (differs in: {', '.join(diffs)}); "
        "use a new --workdir, or the same config to resume"
      )
    return old
  if jax.process_index() == 0:
    held_out.write_json(path, new)
    held_out.write_json(root / DATA_SPEC_FILE, spec.to_json())
  return new


def eval_layout(setup: Setup, ema_params):
  """The EMA in the parameters' layout for evaluation (under ZeRO-1 it lives split over the data axis, and the
  evaluation step is compiled for the parameters' layout)."""
  return jax.device_put(ema_params, setup.state_shardings.params)


_MISSING = object()


def _lookup(tree: dict, dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return _MISSING
    tree = tree[part]
  return tree


def _defaults() -> dict:
  return json.loads(configs.base_config().to_json(sort_keys=True))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in set(a) | set(b):
      out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    return out
  return [] if a == b else [prefix.rstrip(".")]


class _Preemption:
  """Turns SIGTERM into a flag so the loop can save a checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


def _raise_if_diverged(health: dict, last_saved: int | None) -> None:
  """Reads the on-device divergence record (waits for the step that produced it) and raises
  progress.check_finite's error, naming the first non-finite step, if there was one."""
  record = jax.device_get(health)
  bad_step = int(record["first_bad_step"])
  if bad_step >= 0:
    progress.check_finite({k: float(v) for k, v in record["metrics"].items()}, bad_step, last_saved)


def _flatten(tree: dict, prefix: str = "") -> dict:
  """Nested config -> {'a.b': scalar} for TensorBoard's hparams (lists become strings)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out |= _flatten(value, f"{prefix}{key}.")
    else:
      out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None) -> dict:
  """Trains (resuming from the workdir if it has checkpoints), then evaluates on the test split.

  `stop_at_step` pauses the run early with a checkpoint (the schedule still follows train.num_steps), as a
  preemption would; rerunning continues it.

  Its wall time is split into goodput parts as goodput.py's docstring says (no sync of its own).
  """
  stopwatch = goodput.Goodput()
  # Every check runs before the workdir is written: a refused run leaves no trace (a workdir holding a config is
  # bound to it, so a corrected rerun would be refused as "a different config").
  config_checks.check_run_values(config)
  with stopwatch.part("data"):
    dataset = data.load(config.data)
  spec = DataSpec.of_dataset(dataset)
  setup = build_setup(config, spec)  # traces the network's shapes only (jax.eval_shape): seconds, no allocation
  tc = config.train
  batch_notes = sharding.check_config_batches(config, setup.mesh)  # every batch size of the run, before allocating
  # Indivisible dimensions and an FSDP mesh that shards almost nothing stop here.
  sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)
  # Checkpoints carry the hash of the config the run recorded at its start (what the jobs compute from config.json),
  # so a workdir of an older release, whose config.json and checkpoints lack keys added since, resumes.
  run_hash = config_hash(ml_collections.ConfigDict(_prepare_workdir(config, workdir, spec)))
  is_main = jax.process_index() == 0
  log = print if is_main else (lambda *a, **k: None)
  for note in batch_notes:
    log(note, flush=True)
  log(sharding.describe_layout(setup.mesh, setup.abstract_state, setup.state_shardings), flush=True)
  log(objective.describe(setup.objective), flush=True)

  manager = checkpoint.make_manager(workdir, keep=int(tc.keep_checkpoints))
  latest = manager.latest_step()
  best_eval = None  # {"step", "eval_bpd"} of the best held-out evaluation so far (train.eval_every)
  if latest is None:
    with stopwatch.part("compile"):  # one jitted program, compiled then run once
      state = setup.init_state(int(config.seed))
    log(f"initialised {count_params(setup.abstract_state.params):,} parameters", flush=True)
  else:
    with stopwatch.part("checkpoint"):
      state, meta = checkpoint.restore(manager, latest, setup.abstract_state, setup.state_shardings)
    if meta.get("config_hash") != run_hash:
      raise ValueError(f"checkpoint {latest} in {workdir} was written by another config; use a new --workdir")
    best_eval = meta.get("best_eval")
    log(f"resumed from step {latest}", flush=True)

  step_fn = compile_train_step(setup, check_finite=True)
  base_key = jax.device_put(jax.random.PRNGKey(int(config.seed) + 1), sharding.replicated(setup.mesh))
  # Divergence is recorded on device (checked_train_step) and read only when the host syncs anyway: at a progress
  # line, and before every evaluation and checkpoint, so steps between them never wait for the host.
  health = jax.device_put(initial_health(), sharding.replicated(setup.mesh))
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main, asynchronous=True)
  num_steps = int(tc.num_steps)
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer, every_steps=int(tc.log_every))
  held_out_progress = held_out.HeldOutProgress(setup, dataset, config, writer, log)
  step = start_step = int(jax.device_get(state.step))
  last_saved = latest
  if step == 0:
    writer.write_hparams(
      _flatten(json.loads(config.to_json(sort_keys=True))) | {"num_params": count_params(state.params)}
    )

  def save(state, step, force=False, eval_bpd=None):
    meta = {"step": step, "config_hash": run_hash, "best_eval": best_eval}
    with stopwatch.part("checkpoint"):
      checkpoint.save(manager, step, state, meta, force=force, eval_bpd=eval_bpd)

  stop = num_steps if stop_at_step is None else min(stop_at_step, num_steps)
  t_start, throughput, compiled_step = time.time(), None, None
  if step < stop:  # a finished run that is rerun only evaluates: nothing to count or compile
    with stopwatch.part("compile"):
      batch = jax.ShapeDtypeStruct(
        (int(tc.batch_size),) + spec.shape, jnp.int32, sharding=sharding.batch_sharding(setup.mesh)
      )
      with setup.context():  # compiled ahead of time: its own goodput part and memory estimate, no second compile
        lowered = step_fn.lower(state, batch, base_key, health)
      num_devices = setup.mesh.devices.size
      throughput = progress.measure_throughput(config, spec, num_devices, compile_train_step, log, lowered)
      compiled_step = lowered.compile()
  lines = progress.ProgressLog(
    writer,
    log,
    num_steps,
    int(tc.log_every),
    throughput=throughput,
    busy_s=lambda: stopwatch.seconds("train", "data"),
    t_start=t_start,
  )
  pending = None  # (step, metrics, health) of a progress line, fetched after the next step is dispatched

  def report_pending():
    nonlocal pending
    if pending is not None:
      _raise_if_diverged(pending[2], last_saved)  # a divergence before this line is reported as such
      lines(pending[0], pending[1], last_saved)
      pending = None

  traced = is_main or bool(tc.get("profile_all_processes"))
  tracer = profiling.StepTrace(configs.profile_steps(config), workdir, traced, log)
  try:
    with _Preemption() as preemption, setup.context(), tracer:
      while step < stop:
        tracer.before_step(step)
        with stopwatch.part("data"):
          local = dataset.train_batch(
            step, int(tc.batch_size), int(config.seed), jax.process_index(), jax.process_count()
          )
          batch = sharding.global_batch(local, setup.mesh)
        with stopwatch.part("train"):
          state, metrics, health = compiled_step(state, batch, base_key, health)
          step += 1
          tracer.after_step(step, metrics)  # ending a trace waits for its last step (profiled runs only)
          report_pending()
          if lines.due(step):
            pending = (step, metrics, health)
            if not lines.started:  # the first step is reported at once: its line says the run is alive
              report_pending()
              progress.log_memory(writer, log, step, compiled_step, "first log step")
          report(step)
        # A SIGTERM leaves no time for an evaluation; the step is saved without one.
        evaluate_now = held_out_progress.due(step) and not preemption.requested
        if step % int(tc.checkpoint_every) == 0 or step == stop or preemption.requested or evaluate_now:
          with stopwatch.part("train"):
            report_pending()  # printed before the eval line
            _raise_if_diverged(health, last_saved)  # nothing non-finite is evaluated or saved
          eval_bpd = None
          if evaluate_now:  # saved with its metric, so the checkpoint manager can keep the best one
            with stopwatch.part("eval"):
              eval_bpd = held_out_progress(step, eval_layout(setup, state.ema_params))
            if best_eval is None or eval_bpd < best_eval["eval_bpd"]:
              best_eval = {"step": step, "eval_bpd": eval_bpd}
          save(state, step, force=preemption.requested, eval_bpd=eval_bpd)
          last_saved = step
        if preemption.requested:
          with stopwatch.part("checkpoint"):
            manager.wait_until_finished()
          log(f"SIGTERM: saved checkpoint at step {step}; exiting (rerun the same command to resume)", flush=True)
          goodput.record(stopwatch, workdir, writer, log, step, start_step=start_step, end_step=step)
          writer.flush()
          manager.close()
          return {"step": step, "preempted": True}
      with stopwatch.part("train"):
        report_pending()
        _raise_if_diverged(health, last_saved)
      if last_saved != step:
        save(state, step)
  except FloatingPointError:  # divergence: the checkpoints saved before it are finished, then the error stands
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    raise
  with stopwatch.part("checkpoint"):
    manager.wait_until_finished()
    manager.close()
  if compiled_step is not None:
    progress.log_memory(writer, log, step, compiled_step, "end of training")

  result = {"step": step, "preempted": False}
  if throughput is not None:
    result["flops_per_step"] = throughput.flops_per_step
  if step < num_steps:
    log(f"paused at step {step} of {num_steps}; rerun to continue", flush=True)
  elif int(tc.eval_passes) > 0:
    with setup.context(), stopwatch.part("eval"):
      test = held_out.evaluate_params(
        setup,
        eval_layout(setup, state.ema_params),
        dataset.eval_items("test"),
        passes=int(tc.eval_passes),
        batch_size=int(tc.eval_batch_size),
        seed=int(config.seed),
      )
    test.pop("per_item")
    writer.write_scalars(step, {"test_bpd": test["bpd"], "test_bpd_stderr": test["stderr"]})
    unit = held_out.unit_name(spec)
    log(
      f"test {unit} (EMA params, {test['passes']} pass(es) over {test['num_items']} items): "
      f"{test['bpd']:.4f} ± {test['stderr']:.4f}",
      flush=True,
    )
    result["test"] = test
  result["goodput"] = goodput.record(stopwatch, workdir, writer, log, step, start_step=start_step, end_step=step)
  writer.flush()
  return result
