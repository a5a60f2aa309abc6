"""The trainer: every config builds and steps, resume is exact (also after SIGTERM), divergence stops cleanly."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from conftest import expect_error, load_benchmark, run
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax import checkpoint, configs, goodput, progress, sharding, train
from ardm_jax.train_state import DataSpec, build_setup, spec_without_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))


def _variants(path):
  text = open(path).read()
  return ["default"] + [v for v in ("tiny", "pydoc", "upscale", "upscale_tiny") if f"{v!r}" in text or f'"{v}"' in text]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_every_config_builds_and_steps_abstractly(path):
  """Paper-sized configs too: build the sharded state and trace one train step with jax.eval_shape."""
  for variant in _variants(path):
    config = configs.load_config_file(f"{path}:{variant}")
    assert "Expected" in open(path).read() and "ardm train" in open(path).read(), "docstring must hold command+result"
    image = config.model.name == "unet" or config.data.name == "digits"
    spec = spec_without_data(config) or DataSpec(
      "x", "image" if image else "text", (8, 8, 1) if image else (int(config.data.seq_len),), 17
    )
    setup = build_setup(config, spec)
    step_fn = train.compile_train_step(setup)
    batch = jax.ShapeDtypeStruct((int(config.train.batch_size),) + spec.shape, np.int32)
    out_state, metrics = jax.eval_shape(step_fn, setup.abstract_state, batch, jax.random.PRNGKey(0))
    assert metrics["loss"].shape == ()
    assert jax.tree.structure(out_state) == jax.tree.structure(setup.abstract_state)


@pytest.mark.parametrize(
  "name", ["digits.py:tiny", "local_text.py:pydoc_tiny", "local_text.py:tiny", "cifar10_subset.py:tiny"]
)
def test_tiny_configs_run_real_steps(name, tmp_path):
  overrides = {}
  if name == "local_text.py:pydoc_tiny":
    name = "local_text.py:tiny"
    overrides["data.name"] = "'pydoc_text'"
  elif name == "local_text.py:tiny":
    text = tmp_path / "input.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    overrides["data.path"] = repr(str(text))
  elif name.startswith("cifar10_subset"):
    path = os.path.join(SHARED_DATA, "cifar10_subset", "cifar10_subset.npz")
    if not os.path.exists(path):
      if os.environ.get("CI") == "true":
        pytest.fail(f"{path} is missing in CI: the shared data folder must sit beside the repository")
      pytest.skip("shared data not present")
    overrides["data.path"] = repr(path)
  if name == "digits.py:tiny":  # and a jax.profiler trace of steps 1-3 where TensorBoard and XProf look for it
    overrides["train.profile_steps"] = "'1:3'"
  result = _run(os.path.join(REPO, "experiments", name), tmp_path / "w", **overrides)
  assert result["step"] >= 2 and not result["preempted"]
  if name == "digits.py:tiny":
    assert glob.glob(str(tmp_path / "w" / "plugins" / "profile" / "*" / "*.xplane.pb")), os.listdir(tmp_path / "w")


def _params_at(workdir, step=None):
  from ardm_jax import workdir as wd

  model = wd.open_workdir(str(workdir), use_ema=False, step=step)
  return [np.asarray(x) for x in jax.tree.leaves(model.params)], model.step


def _config(path_variant, **overrides):
  config = configs.load_config_file(path_variant)
  return configs.apply_overrides(config, [f"--config.{k}={v}" for k, v in overrides.items()])


def _run(path_variant, workdir, stop_at_step=None, **overrides):
  return train.train_and_evaluate(_config(path_variant, **overrides), str(workdir), stop_at_step=stop_at_step)


DIGITS_TINY = os.path.join(REPO, "experiments", "digits.py:tiny")
# The trainer's tests need a network, not attention: without the U-Net's attention blocks the tiny digits model
# compiles in about 60% of the time. Attention itself is tested in test_nets.py and test_dependencies.py.
TRAINER_ONLY = {"train.eval_passes": 0, "model.attention": False}


def test_sigterm_saves_and_resume_matches(tmp_path):
  """SIGTERM mid-run saves a checkpoint and exits 0; resuming (also a workdir of an older release, whose config
  lacks keys added since) gives exactly the uninterrupted run's params; stop_at_step ends with a checkpoint."""
  common = {"train.num_steps": 400, "train.checkpoint_every": 1000, "train.log_every": 1, **TRAINER_ONLY}
  args = [
    sys.executable,
    "-m",
    "ardm_jax.cli",
    "train",
    "--config",
    DIGITS_TINY,
    "--workdir",
    str(tmp_path / "pre"),
  ] + [f"--config.{k}={v}" for k, v in common.items()]
  proc = subprocess.Popen(
    args,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    cwd=REPO,
    env=dict(os.environ, PYTHONUNBUFFERED="1"),
  )
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      proc.send_signal(signal.SIGTERM)
      break
  rest, _ = proc.communicate(timeout=300)
  out = "".join(lines) + rest
  assert proc.returncode == 0, out
  assert "SIGTERM: saved checkpoint" in out, out
  stopped_at = checkpoint.latest_step(str(tmp_path / "pre"))
  assert 3 <= stopped_at < 400
  # A workdir of an older release lacks keys added since at their defaults, in config.json and in the config hash
  # of its checkpoints: it still resumes, and its new checkpoints keep that hash (the one the jobs compute).
  path = tmp_path / "pre" / train.CONFIG_FILE
  saved = json.load(open(path))
  del saved["compile_cache_dir"], saved["mesh"]["zero1"], saved["optim"]["ema_warmup"]
  path.write_text(json.dumps(saved))
  old_hash = configs.config_hash(ml_collections.ConfigDict(saved))
  meta_path = tmp_path / "pre" / checkpoint.CHECKPOINT_DIR / str(stopped_at) / "meta" / "metadata"
  meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"config_hash": old_hash}))
  horizon = stopped_at + 2
  resume_config = _config(DIGITS_TINY, **common)
  start = time.perf_counter()
  train.train_and_evaluate(resume_config, str(tmp_path / "pre"), stop_at_step=horizon)
  elapsed = time.perf_counter() - start
  # Goodput: the SIGTERM'd segment and the resumed one, each split into parts that sum to its wall time; the
  # resumed segment's wall time is the call's, less the final flush of the metric writer after it is recorded
  # (a few ms, up to a few hundred on a loaded machine: hence the absolute slack).
  segments = json.load(open(tmp_path / "pre" / goodput.GOODPUT_FILE))
  assert [(seg["start_step"], seg["end_step"]) for seg in segments] == [(0, stopped_at), (stopped_at, horizon)]
  for seg in segments:
    parts = [seg[f"{part}_s"] for part in goodput.PARTS]
    assert min(parts) >= 0 and sum(parts) == pytest.approx(seg["wall_s"], rel=1e-9)
    assert seg["compile_s"] > 0 and seg["train_s"] > 0 and seg["checkpoint_s"] > 0 and seg["data_s"] > 0
  assert elapsed - max(0.05 * elapsed, 0.5) <= segments[1]["wall_s"] <= elapsed
  meta_path = tmp_path / "pre" / checkpoint.CHECKPOINT_DIR / str(horizon) / "meta" / "metadata"
  assert json.loads(meta_path.read_text())["config_hash"] == old_hash
  _run(DIGITS_TINY, tmp_path / "ref", stop_at_step=horizon, **common)
  assert checkpoint.latest_step(str(tmp_path / "ref")) == horizon  # stop_at_step ends with a checkpoint there
  resumed, step_resumed = _params_at(tmp_path / "pre", horizon)
  ref, step_ref = _params_at(tmp_path / "ref", horizon)
  assert step_resumed == step_ref == horizon
  for a, b in zip(ref, resumed):
    np.testing.assert_array_equal(a, b)


def test_divergence_stops_with_clear_message(tmp_path):
  with pytest.raises(FloatingPointError, match="diverged at step .* not finite"):
    _run(
      DIGITS_TINY,
      tmp_path / "nan",
      **{
        "model.attention": False,
        "optim.learning_rate": 1e30,
        "optim.clip_norm": 1e30,
        "train.num_steps": 6,
        "optim.warmup_steps": 1,
      },
    )


def test_divergence_between_progress_lines_is_caught_before_the_next_checkpoint(tmp_path, monkeypatch):
  """Metrics are fetched only for progress lines, so the step that goes non-finite (3, poisoned here) is seen on
  device; the next checkpoint (4) is refused, the message names step 3, and checkpoint 2 stays intact."""
  import optax  # pylint: disable=import-outside-toplevel

  real = train.train_step

  def poisoned(state, batch, key, **kwargs):
    new_state, metrics = real(state, batch, key, **kwargs)
    params = jax.tree.map(lambda p: jnp.where(new_state.step == 3, jnp.nan, p), new_state.params)
    return new_state.replace(params=params), metrics | {"param_norm": optax.tree.norm(params)}

  fetched = []
  real_call = progress.ProgressLog.__call__

  def spy(self, step, metrics, last_saved):
    fetched.append(step)
    return real_call(self, step, metrics, last_saved)

  monkeypatch.setattr(train, "train_step", poisoned)
  monkeypatch.setattr(progress.ProgressLog, "__call__", spy)
  w = tmp_path / "w"
  with pytest.raises(
    FloatingPointError,
    match=r"diverged at step 3: \{'param_norm': nan\} is not finite; stopped "
    r"without saving this state \(checkpoint step 2 is intact\)",
  ):
    _run(DIGITS_TINY, w, **TRAINER_ONLY, **{"train.num_steps": 6, "train.log_every": 100, "train.checkpoint_every": 2})
  assert fetched == [1]  # only the first step's line; steps 2-4 were never fetched one by one
  assert checkpoint.latest_step(str(w)) == 2
  params, step = _params_at(w)
  assert step == 2 and all(np.isfinite(p).all() for p in params)


def test_workdir_with_other_config_is_refused(tmp_path):
  _run(DIGITS_TINY, tmp_path / "w", **TRAINER_ONLY)
  with pytest.raises(ValueError, match="different config"):
    _run(DIGITS_TINY, tmp_path / "w", **TRAINER_ONLY, seed=1)
  saved = json.load(open(tmp_path / "w" / train.CONFIG_FILE))
  assert saved["seed"] == 0  # nothing the first run saved was overwritten
  # Where the compile cache lives is not part of the run (nor of the config hash).
  _run(DIGITS_TINY, tmp_path / "w", **TRAINER_ONLY, compile_cache_dir=str(tmp_path / "cache"))
  from ardm_jax import workdir as wd  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match="no held-out evaluation was recorded; train with --config.train.eval_every=N"):
    wd.open_workdir(str(tmp_path / "w"), step="best")


PAPER_CONFIGS = ("cifar10", "cifar10_upscale4", "text8", "text8_upscale", "sc09", "sc09_upscale")


def test_paper_configs_take_the_official_settings_and_the_base_keeps_the_old_ones():
  """Where the paper is silent the six paper configs follow the official code (uniform t, a constant EMA decay, its
  initialisers and time embedding); the base config keeps what older workdirs were trained with."""
  official_net = {
    "unet": dict(input_embed_std=0.125, time_endpoint=True),
    "transformer": dict(kernel_init="xavier_uniform", attention_bias=False),
    "diffwave": dict(kernel_init="kaiming_normal", input_embed_std=0.125, time_endpoint=True),
  }
  for name in PAPER_CONFIGS:
    for variant in ("default", "tiny"):
      config = configs.load_config_file(os.path.join(REPO, "experiments", f"{name}.py:{variant}"))
      assert config.ardm.t_sampling == "uniform" and config.optim.ema_warmup is False, name
      assert {k: config.model[k] for k in official_net[config.model.name]} == official_net[config.model.name], name
  base = configs.base_config()
  assert base.ardm.t_sampling == "stratified" and base.optim.ema_warmup is True
  digits = configs.load_config_file(DIGITS_TINY)
  assert digits.ardm.t_sampling == "stratified" and configs.ema_warmup(digits)


def test_ema_is_a_constant_decay_without_warmup_and_warms_up_where_the_config_lacks_the_key():
  """optim.ema_warmup=False: after the first step the EMA is decay * initial + (1 - decay) * new parameters, the
  official update; a config without the key (an older workdir's) keeps the warm-up, min(decay, 1/10) at step 0."""
  spec = DataSpec("digits", "image", (8, 8, 1), 17)
  batch = np.random.default_rng(0).integers(0, 17, (8, 8, 8, 1)).astype(np.int32)
  for warmup, decay in ((False, 0.9), (None, 0.1)):
    config = configs.apply_overrides(
      configs.load_config_file(DIGITS_TINY),
      # No learning-rate warm-up: the first step must move the parameters for the two decays to differ.
      ["--config.model.attention=False", "--config.optim.ema_decay=0.9", "--config.optim.warmup_steps=0"],
    )
    with config.unlocked():
      if warmup is None:
        del config.optim["ema_warmup"]
      else:
        config.optim.ema_warmup = warmup
    setup = build_setup(config, spec)
    state = setup.init_state(0)
    initial = [np.asarray(x) for x in jax.tree.leaves(state.ema_params)]  # copied: the step donates the state
    step_fn = train.compile_train_step(setup)
    new, _ = step_fn(state, sharding.global_batch(batch, setup.mesh), jax.random.PRNGKey(1))
    decay = np.float32(decay)
    params = jax.tree.leaves(new.params)
    assert max(np.abs(p - e0).max() for p, e0 in zip(params, initial)) > 1e-3
    for e0, p, e in zip(initial, params, jax.tree.leaves(new.ema_params)):
      # To float32 rounding: XLA may fuse the multiply-add, which rounds once where numpy rounds twice.
      np.testing.assert_allclose(np.asarray(e), decay * e0 + (np.float32(1) - decay) * np.asarray(p), rtol=1e-6)


def test_unknown_override_is_rejected():
  config = configs.load_config_file(os.path.join(REPO, "experiments", "digits.py"))
  with pytest.raises(ValueError, match="unknown config key 'train.batchsize'"):
    configs.apply_overrides(config, ["--config.train.batchsize=3"])
  with pytest.raises(ValueError, match="wrong type"):
    configs.apply_overrides(config, ["--config.train.batch_size=abc"])


@pytest.mark.parametrize(
  "override, match",
  [
    ("--config.train.eval_every=-5", "--config.train.eval_every must be an integer >= 0"),
    ("--config.optim.b2=1.5", "--config.optim.b2 must be a number in [0, 1)"),
    ("--config.ardm.t_sampling=antithetic", "--config.ardm.t_sampling must be one of uniform, stratified"),
    ("--config.train.batchsize=8", "unknown config key 'train.batchsize'"),
    ("--config.ardm.objective=arn", "unknown ardm.objective 'arn'"),  # found while building the network's shapes
    ("--config.train.batch_size=-8", "--config.train.batch_size must be an integer >= 1"),
    ("--config.train.profile_steps=5:3", "--config.train.profile_steps must be 'A:B' with 0 <= A < B"),
  ],
)
def test_a_refused_config_leaves_no_trace_and_the_corrected_command_trains(tmp_path, capsys, override, match):
  w = tmp_path / "w"
  expect_error(capsys, "train", "--config", DIGITS_TINY, "--workdir", w, override, match=match)
  assert not w.exists()  # nothing written: not config.json, not a checkpoints folder, not an events file
  if override.startswith("--config.train.eval_every"):  # once: the corrected command then trains in that workdir
    cheap = [f"--config.{k}={v}" for k, v in TRAINER_ONLY.items()]
    assert run("train", "--config", DIGITS_TINY, "--workdir", w, "--config.train.eval_every=0", *cheap) == 0
    assert json.load(open(w / train.CONFIG_FILE))["train"]["eval_every"] == 0


def _tracker(mean, count, batch_sum, batch_count, window):
  out = jax.jit(train.update_lt_tracker)(
    np.float32(mean), np.float32(count), np.float32(batch_sum), np.float32(batch_count), float(window)
  )
  return [np.asarray(x) for x in out]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_warms_up_linearly_or_starts_at_the_full_rate(schedule):
  import ml_collections

  from ardm_jax.train_state import learning_rate_schedule

  cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, schedule=schedule, warmup_steps=10))
  lr = learning_rate_schedule(cfg, 100)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-4) and float(lr(10)) == pytest.approx(1e-3)
  cfg.warmup_steps = 0  # official CIFAR-10 / SC09: no warm-up, so step 0 must not train at rate 0
  assert float(learning_rate_schedule(cfg, 100)(0)) == pytest.approx(1e-3)
  cfg.warmup_steps = -1
  with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
    learning_rate_schedule(cfg, 100)


def test_lt_tracker_is_the_exact_mean_below_its_window():
  rng = np.random.default_rng(0)
  num_t, window = 5, 1000.0
  mean, count = np.zeros(num_t, np.float32), np.zeros(num_t, np.float32)
  seen = [[] for _ in range(num_t)]
  for _ in range(40):  # about 8 samples per step per batch: 320 < window
    t_b = rng.integers(0, num_t, 40)
    bits_b = rng.normal(3.0, 1.0, 40)
    batch_sum = np.zeros(num_t)
    np.add.at(batch_sum, t_b, bits_b)
    mean, count = _tracker(mean, count, batch_sum, np.bincount(t_b, minlength=num_t), window)
    for t, b in zip(t_b, bits_b):
      seen[t].append(b)
  np.testing.assert_allclose(mean, [np.mean(s) for s in seen], rtol=1e-5)
  np.testing.assert_array_equal(count, [len(s) for s in seen])
  # A step no batch has reached keeps its zero (lt_estimate reports NaN for it).
  mean0, count0 = _tracker(np.zeros(2), np.zeros(2), np.array([6.0, 0.0]), np.array([2.0, 0.0]), window)
  np.testing.assert_array_equal(mean0, [3.0, 0.0])
  np.testing.assert_array_equal(count0, [2.0, 0.0])


def test_lt_tracker_stays_accurate_where_float32_sums_drift_and_follows_a_level_shift():
  """A step that has seen 2^24 samples of ~3 bits: float32 sums round every new ~3 up to the sum's ulp (4) while
  the count no longer grows, so the old estimate drifts; the windowed mean does not, and it forgets old losses."""
  window, updates = 1000.0, 100_000
  noise = np.random.default_rng(1).normal(0.0, 0.05, updates).astype(np.float32)

  def run(level_shift):
    def body(carry, x):
      mean, count, old_sum, old_count = carry
      mean, count = train.update_lt_tracker(mean, count, x + 3.0 - level_shift, jnp.float32(1.0), window)
      return (mean, count, old_sum + x + 3.0 - level_shift, old_count + 1.0), None

    start = (jnp.float32(3.0), jnp.float32(2.0**24), jnp.float32(3.0 * 2.0**24), jnp.float32(2.0**24))
    (mean, _, old_sum, old_count), _ = jax.lax.scan(body, start, jnp.asarray(noise))
    return float(mean), float(old_sum / old_count)

  mean, old = run(level_shift=0.0)
  assert abs(mean - 3.0) < 0.01
  assert abs(old - 3.0) > 0.02, old  # the float32 running sum of the old tracker has drifted
  mean, old = run(level_shift=1.0)  # the loss falls to 2 bits: the window forgets the 2^24 old samples
  assert abs(mean - 2.0) < 0.01
  assert abs(old - 2.0) > 0.9  # an all-time mean would still say about 3


def _tensorboard_scalars(workdir, tag):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=import-outside-toplevel

  out = {}
  for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
    for event in summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


def test_held_out_progress_keeps_the_best_checkpoint_through_rotation(tmp_path, monkeypatch, capsys):
  """eval_every=2 over 6 steps with keep_checkpoints=1: the evaluation's numbers are forced so that step 4 is the
  best; it must survive the later saves (5, 6), be recorded in the meta and be what `ardm eval --step best` opens.
  Batch 32 gives the L_t tracker 3 samples per step, so `ardm policy --use-tracker` runs on the same workdir."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from ardm_jax import cli, held_out
  from ardm_jax import workdir as wd

  real = held_out.evaluate_params
  forced = {2: 5.0, 4: 1.0, 6: 4.0}
  calls = []

  def evaluate_params(setup, params, items, **kwargs):
    result = real(setup, params, items, **kwargs)
    calls.append((items, kwargs))
    return result | {"bpd": forced[sorted(forced)[len(calls) - 1]]}

  monkeypatch.setattr(held_out, "evaluate_params", evaluate_params)
  w = tmp_path / "w"
  overrides = {
    "train.num_steps": 6,
    "train.eval_every": 2,
    "train.eval_items": 40,
    "train.keep_checkpoints": 1,
    "train.checkpoint_every": 5,
    "train.log_every": 100,
    "train.batch_size": 32,
  }
  result = _run(DIGITS_TINY, w, **TRAINER_ONLY, **overrides)
  out = capsys.readouterr().out
  assert "compile + first step" in out and "step 1/6" in out
  # Throughput on the last line (the first one's time holds the compile); on the CPU no MFU, and the run says so once.
  step_lines = [line for line in out.splitlines() if line.startswith("step ")]
  assert "examples/s" in step_lines[-1] and "dims/s" in step_lines[-1] and "TFLOP/s/device" in step_lines[-1]
  assert out.count("MFU not reported: no peak FLOP/s known for device kind 'cpu'") == 1
  assert not any("MFU" in line for line in step_lines)
  assert "goodput: " in out and "% in train steps" in out
  # The trainer's model FLOPs are benchmarks/throughput.py's count of the same config (global batch 32).
  config = _config(DIGITS_TINY, **TRAINER_ONLY, **overrides)
  bench = load_benchmark("throughput")
  assert result["flops_per_step"] == bench.global_step_flops(config, bench.spec_of(config), 32) > 0
  for tag in ("examples_per_s", "dims_per_s", "tflops_per_device", "goodput/train_s", "goodput/wall_s"):
    assert set(_tensorboard_scalars(w, tag)) == {6}, tag
  for step, value in forced.items():
    assert f"eval step {step}: {value:.4f} ± " in out and "bits/dim (EMA params, 40 test items)" in out
  assert all(np.array_equal(items, calls[0][0]) and kwargs == calls[0][1] for items, kwargs in calls)
  assert len(calls[0][0]) == 40 and calls[0][1]["eval_fn"] is not None
  assert _tensorboard_scalars(w, "eval_bpd") == forced
  assert set(_tensorboard_scalars(w, "eval_bpd_stderr")) == set(forced)

  manager = checkpoint.make_manager(str(w), async_save=False)
  try:
    assert manager.all_steps() == [4, 6]  # the latest one plus the best, though 5 and 6 were saved after it
    assert checkpoint.best_step(manager) == 4
    meta = manager.restore(6, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  finally:
    manager.close()
  assert meta["best_eval"] == {"step": 4, "eval_bpd": 1.0}
  assert wd.open_workdir(str(w), step="best").step == 4
  with pytest.raises(ValueError, match="no checkpoint at step 5; it keeps steps \\[4, 6\\]"):
    wd.open_workdir(str(w), step=5)

  monkeypatch.setattr(held_out, "evaluate_params", real)
  assert cli.main(["eval", "--workdir", str(w), "--step", "best"]) == 0
  result = json.load(open(w / "eval_step4.json"))
  assert result["step"] == 4 and np.isfinite(result["bpd"])
  assert cli.main(["policy", "--workdir", str(w), "--budgets", "4", "--use-tracker"]) == 0
  fingerprint = json.load(open(w / "policy.json"))["fingerprint"]
  assert fingerprint["lt_source"] == "tracker (running mean, window 1000 samples per step)"
