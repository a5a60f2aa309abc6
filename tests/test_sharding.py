"""Sharding on 8 fake CPU devices: data, FSDP and data x tensor meshes reproduce the 1-device train step,
checkpoints move between meshes bit for bit, and bad layouts are refused before anything is allocated. ZeRO-1
(config.mesh.zero1) trains like the replicated state with less memory per device, and its checkpoints restore
with the switch flipped.

The device count must be fixed before JAX starts, so the 8-device work runs once in a subprocess (this file
run as a script; `zero1` as its argument for the ZeRO-1 part) that prints its measurements as JSON; the tests
assert on them.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 8
MESHES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "data_x_tensor": (4, 1, 2)}
SGD_LR = 1.0
# Leaves whose exact gradient is (nearly) zero, such as the attention key bias (softmax ignores a shift
# shared by all keys), are compared against this fraction of the total gradient norm instead of their own.
LEAF_FLOOR = 1e-3


def _run_worker(what: str, timeout: int, *args) -> dict:
  """This file as an 8-device script (the module docstring); its JSON."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env |= {
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES}",
  }
  proc = subprocess.run(
    ["timeout", "-s", "KILL", str(timeout), sys.executable, os.path.abspath(__file__), *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout + 30,
  )
  assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
  return json.loads(proc.stdout.strip().splitlines()[-1])


# Under `--dist loadgroup` each fixture's tests share one xdist group, so its worker subprocess runs once per
# session (a module fixture is otherwise set up again by every xdist worker that runs one of its tests); the two
# groups can run side by side on two workers.
@pytest.fixture(scope="module")
def measured():
  return _run_worker("8-device worker", 300)


@pytest.mark.xdist_group("test_sharding")
@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_train_step_matches_one_device(measured, mesh):
  """One real train step (SGD, lr 1, so the update is the gradient) on 8 devices vs on 1."""
  m = measured["meshes"][mesh]
  assert m["mesh"] == dict(zip(("data", "fsdp", "tensor"), MESHES[mesh]))
  assert m["init_params_equal"], "sharded initialisation drew different parameters"
  assert m["grad_rel_err"] <= 1e-5, m
  assert m["worst_leaf_rel_err"] <= 1e-5, m
  assert abs(m["loss"] - measured["reference"]["loss"]) <= 1e-5 * abs(measured["reference"]["loss"])
  assert m["lt_tracker_equal"], "the running L_t tracker differs"


@pytest.mark.xdist_group("test_sharding")
def test_fsdp_and_tensor_meshes_really_split_the_parameters(measured):
  ref = measured["reference"]["param_bytes_per_device"]
  assert measured["meshes"]["data"]["param_bytes_per_device"] == ref  # data parallel: a full copy each
  # 8-way split, apart from the ~15% (the tiny time MLP, biases) that the default rules keep whole.
  assert measured["meshes"]["fsdp"]["param_bytes_per_device"] <= 0.3 * ref
  assert measured["meshes"]["data_x_tensor"]["param_bytes_per_device"] < 0.9 * ref


@pytest.mark.xdist_group("test_sharding")
def test_state_is_created_sharded_never_whole(measured):
  mem = measured["init_memory"]
  assert mem["per_device_bytes"] < 0.5 * mem["whole_state_bytes"], mem
  assert mem["per_device_bytes"] >= mem["expected_shard_bytes"], mem


@pytest.mark.xdist_group("test_sharding")
def test_checkpoint_saved_on_4x2_restores_exactly_on_8x1_and_one_device(measured):
  ckpt = measured["checkpoint"]
  assert ckpt["saved_on"] == {"data": 4, "fsdp": 2, "tensor": 1}
  for target in ("8x1", "1"):
    assert ckpt[target]["leaves"] == ckpt["num_leaves"] > 0
    assert ckpt[target]["mismatched"] == [], ckpt[target]
    assert ckpt[target]["on_target_shardings"], ckpt[target]


@pytest.mark.xdist_group("test_sharding")
def test_layout_checks(measured):
  checks = measured["checks"]
  assert checks["default_fsdp_replicated_fraction"] < 0.5
  assert "replicated on every device" in checks["no_fsdp_rule"] and "sharding_rules" in checks["no_fsdp_rule"]
  assert "cannot be split 8 ways" in checks["indivisible"] and "input_embed" in checks["indivisible"]
  assert checks["warning"] is not None and "FSDP over 8 devices" in checks["warning"]


# ---- the 8-device worker -------------------------------------------------------------------------------------


def _worker() -> dict:
  import tempfile
  import warnings

  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from ardm_jax import checkpoint, configs, sharding, train, train_state
  from ardm_jax.train_state import DataSpec, build_setup

  jax.config.update("jax_numpy_rank_promotion", "raise")
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  text_spec = DataSpec("text", "text", (32,), 27, " abcdefghijklmnopqrstuvwxyz")

  def text_config(sizes, rules=None):
    config = configs.load_config_file(os.path.join(REPO, "experiments", "local_text.py:tiny"))
    overrides = [f"--config.mesh.{axis}={size}" for axis, size in zip(("data", "fsdp", "tensor"), sizes)]
    overrides.append("--config.train.batch_size=16")
    config = configs.apply_overrides(config, overrides)
    if rules is not None:
      with config.unlocked():
        config.sharding_rules = rules
    return config

  host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
  batch_np = np.random.default_rng(0).integers(0, 27, (16, 32)).astype(np.int32)

  # SGD with lr 1 makes the step's parameter change exactly the gradient (Adam would amplify 1e-7 noise).
  adam = train_state.make_optimizer
  train_state.make_optimizer = lambda optim_cfg, num_steps: optax.sgd(SGD_LR)

  def one_step(sizes, devices=None):
    setup = build_setup(text_config(sizes), text_spec, devices)
    state = setup.init_state(0)
    before = host(state.params)
    step_fn = train.compile_train_step(setup)
    with setup.context():
      batch = sharding.global_batch(batch_np, setup.mesh)
      key = jax.device_put(jax.random.PRNGKey(7), sharding.replicated(setup.mesh))
      state, metrics = step_fn(state, batch, key)
    grads = jax.tree.map(lambda b, a: (b - a) / SGD_LR, before, host(state.params))
    return {
      "setup": setup,
      "before": before,
      "grads": grads,
      "loss": float(metrics["loss"]),
      "lt": host(state.lt_mean),
      "param_bytes": sharding.per_device_bytes(setup.state_shardings.params, setup.abstract_state.params),
    }

  ref = one_step((1, 1, 1), jax.devices()[:1])
  ref_leaves = jax.tree.leaves(ref["grads"])
  total_norm = float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in ref_leaves)))
  out = {"reference": {"loss": ref["loss"], "param_bytes_per_device": ref["param_bytes"]}, "meshes": {}}
  for name, sizes in MESHES.items():
    got = one_step(sizes)
    diffs = [np.linalg.norm((a - b).astype(np.float64)) for a, b in zip(ref_leaves, jax.tree.leaves(got["grads"]))]
    out["meshes"][name] = {
      "mesh": dict(got["setup"].mesh.shape),
      "init_params_equal": all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ref["before"]), jax.tree.leaves(got["before"]))
      ),
      "grad_rel_err": float(np.sqrt(sum(d**2 for d in diffs)) / total_norm),
      "worst_leaf_rel_err": float(
        max(d / max(np.linalg.norm(a), LEAF_FLOOR * total_norm) for d, a in zip(diffs, ref_leaves))
      ),
      "loss": got["loss"],
      "lt_tracker_equal": bool(np.allclose(got["lt"], ref["lt"], rtol=1e-6)),
      "param_bytes_per_device": got["param_bytes"],
    }
  train_state.make_optimizer = adam

  # Checkpoint: a full Adam state with non-trivial values in every leaf, saved on data=4 x fsdp=2. The values are
  # drawn straight into the state's shards (its structure, shapes, dtypes and layout are those of the real state):
  # one small random program instead of compiling the state's initialisation once more.
  src = build_setup(text_config((4, 2, 1)), text_spec)
  abstract_leaves, treedef = jax.tree.flatten(src.abstract_state)

  def random_state(key):
    keys = jax.random.split(key, len(abstract_leaves))
    return jax.tree.unflatten(
      treedef,
      [
        jax.random.normal(k, x.shape, x.dtype)
        if jnp.issubdtype(x.dtype, jnp.floating)
        else jax.random.randint(k, x.shape, 1, 1000, x.dtype)
        for k, x in zip(keys, abstract_leaves)
      ],
    )

  state = jax.jit(random_state, out_shardings=src.state_shardings)(jax.random.PRNGKey(2))
  saved = host(state)
  ckpt = {"saved_on": dict(src.mesh.shape), "num_leaves": len(jax.tree.leaves(saved))}
  with tempfile.TemporaryDirectory() as workdir:
    manager = checkpoint.make_manager(workdir)
    checkpoint.save(manager, 5, state, {"step": 5})
    manager.wait_until_finished()
    for label, sizes, devices in (("8x1", (8, 1, 1), None), ("1", (1, 1, 1), jax.devices()[:1])):
      dst = build_setup(text_config(sizes), text_spec, devices)
      restored, meta = checkpoint.restore(manager, 5, dst.abstract_state, dst.state_shardings)
      paths = jax.tree_util.tree_flatten_with_path(saved)[0]
      mismatched = [
        jax.tree_util.keystr(p) for (p, a), b in zip(paths, jax.tree.leaves(host(restored))) if not np.array_equal(a, b)
      ]
      placed = all(
        r.sharding.is_equivalent_to(s, r.ndim)
        for r, s in zip(jax.tree.leaves(restored), jax.tree.leaves(dst.state_shardings))
      )
      ckpt[label] = {
        "leaves": len(jax.tree.leaves(restored)),
        "mismatched": mismatched,
        "on_target_shardings": bool(placed and meta["step"] == 5),
      }
    manager.close()
  out["checkpoint"] = ckpt

  # The jitted init writes each device's shard directly: its per-device output and scratch stay far below
  # the whole state (a state built whole and then split would need all of it on one device).
  fsdp = build_setup(text_config((1, 8, 1)), text_spec)
  create = train_state._state_creator(fsdp.net, fsdp.tx, fsdp.spec, fsdp.objective)  # what Setup.init_state jits
  with fsdp.context():
    init = jax.jit(lambda k: nn.unbox(create(k)), out_shardings=fsdp.state_shardings)
    mem = init.lower(jax.random.PRNGKey(0)).compile().memory_analysis()
  out["init_memory"] = {
    "whole_state_bytes": int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(fsdp.abstract_state))),
    "per_device_bytes": int(mem.output_size_in_bytes + mem.temp_size_in_bytes),
    "expected_shard_bytes": sharding.per_device_bytes(fsdp.state_shardings, fsdp.abstract_state),
  }

  # Layout checks, before any allocation.
  def check(setup):
    return sharding.check_param_shardings(setup.abstract_state.params, setup.state_shardings.params, setup.mesh)

  checks = {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the tiny model's time MLP alone is ~15% of it: a warning, not an error
    summary = check(build_setup(text_config((1, 8, 1)), text_spec))
  checks["default_fsdp_replicated_fraction"] = summary["fsdp_replicated_fraction"]
  no_fsdp = [(n, None if n == "embed" else a) for n, a in sharding.DEFAULT_RULES]
  try:
    check(build_setup(text_config((1, 8, 1), rules=no_fsdp), text_spec))
    checks["no_fsdp_rule"] = "no error"
  except ValueError as err:
    checks["no_fsdp_rule"] = str(err)
  fsdp_setup = build_setup(text_config((1, 8, 1)), text_spec)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sharding.check_param_shardings(
      fsdp_setup.abstract_state.params, fsdp_setup.state_shardings.params, fsdp_setup.mesh, warn_fraction=0.0
    )
  checks["warning"] = next((str(w.message) for w in caught if "FSDP" in str(w.message)), None)
  unet = configs.load_config_file(os.path.join(REPO, "experiments", "digits.py:tiny"))
  unet = configs.apply_overrides(unet, ["--config.mesh.data=1", "--config.mesh.fsdp=8"])
  try:
    check(build_setup(unet, DataSpec("digits", "image", (8, 8, 1), 17)))
    checks["indivisible"] = "no error"
  except ValueError as err:
    checks["indivisible"] = str(err)
  out["checks"] = checks
  return out


# ---- ZeRO-1 (config.mesh.zero1): optimizer state and EMA split over `data`, same training ---------------------

ZERO1_MESHES = {"data": (8, 1, 1), "data_x_fsdp": (4, 2, 1)}
ZERO1_STEPS = 3


@pytest.fixture(scope="module")
def zero1_measured():
  return _run_worker("8-device ZeRO-1 worker", 500, "zero1")


@pytest.mark.xdist_group("test_sharding_zero1")
@pytest.mark.parametrize("mesh", ZERO1_MESHES)
def test_zero1_trains_like_replicated_state(zero1_measured, mesh):
  """Adam steps with zero1 on and off: the same parameters, EMA, optimizer state, L_t tracker and metrics."""
  m = zero1_measured["meshes"][mesh]
  # Rounding differs (XLA fuses the split update differently), and Adam turns it into up to ~1e-7 absolute in
  # the attention key bias, whose exact gradient is zero (softmax ignores a shift shared by all keys): its
  # update is normalised rounding noise. Everything else agrees to a few float32 ulps.
  for group in ("params", "ema_params"):
    assert m["allclose"][group], (group, m["max_abs_err"])
  for group in ("opt_state", "lt_mean"):
    assert m["rel_err"][group] <= 1e-5, (group, m["rel_err"])
  assert m["params_moved"], "the steps did not change the parameters: nothing was compared"
  for name, (off, on) in m["metrics"].items():
    assert abs(on - off) <= 1e-5 * abs(off), (name, off, on)


@pytest.mark.xdist_group("test_sharding_zero1")
def test_zero1_splits_optimizer_state_and_ema_over_data(zero1_measured):
  layout = zero1_measured["layout"]
  # Every optimizer/EMA leaf with a dimension divisible by 8 holds 1/8 of it per device; the rest stay whole.
  assert layout["split"] > 0 and layout["wrong"] == [], layout
  assert layout["split_fraction_of_bytes"] > 0.9, layout
  assert layout["params_whole"], "zero1 must not change the parameters' layout"
  assert "ZeRO-1" in layout["log_on"] and "ZeRO-1" not in layout["log_off"]
  # The rule: the dimension with the largest per-device extent that `data` divides, after any split it has.
  assert zero1_measured["rules"] == {
    "(3, 16) on 8": [None, "data"],
    "(16, 16) on 8": ["data", None],
    "(5,) on 8": [],
    "() on 8": [],
    "(16, 64) fsdp on dim 1, 4x2": [None, ["data", "fsdp"]],
    "(8, 6) fsdp on dim 0, 4x2": [["data", "fsdp"], None],
    "(6,) on 4x2": [],
    "already on data": ["data"],
  }


@pytest.mark.xdist_group("test_sharding_zero1")
def test_zero1_lowers_per_device_memory(zero1_measured):
  mem = zero1_measured["meshes"]["data"]["memory"]
  off, on = mem["off"], mem["on"]
  # The whole state is params + EMA + Adam mu, nu (4 copies); ZeRO-1 keeps the params and ~1/8 of the rest.
  assert on["state_bytes_per_device"] < 0.45 * off["state_bytes_per_device"], mem
  assert on["argument_bytes"] < 0.5 * off["argument_bytes"], mem
  assert on["argument_bytes"] + on["temp_bytes"] < off["argument_bytes"] + off["temp_bytes"], mem


@pytest.mark.xdist_group("test_sharding_zero1")
def test_zero1_checkpoints_restore_with_the_switch_flipped(zero1_measured):
  ckpt = zero1_measured["checkpoint"]
  assert set(ckpt) == {"on -> off 8x1", "on -> off 1", "off -> on 8x1", "off -> on 4x2"}
  for label, result in ckpt.items():
    assert result["leaves"] > 0 and result["mismatched"] == [], (label, result)
    assert result["on_target_shardings"], (label, result)


@pytest.mark.xdist_group("test_sharding_zero1")
def test_zero1_evaluates_its_split_ema(zero1_measured):
  ev = zero1_measured["eval"]
  assert ev["ema_split"]
  assert abs(ev["on"] - ev["off"]) <= 1e-5 * abs(ev["off"]), ev


def _zero1_worker() -> dict:
  import tempfile

  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  import numpy as np

  from ardm_jax import checkpoint, configs, held_out, sharding, train
  from ardm_jax.train_state import DataSpec, build_setup

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  text_spec = DataSpec("text", "text", (32,), 27, " abcdefghijklmnopqrstuvwxyz")
  host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))

  def setup_for(sizes, zero1, devices=None):
    config = configs.load_config_file(os.path.join(REPO, "experiments", "local_text.py:tiny"))
    overrides = [f"--config.mesh.{axis}={size}" for axis, size in zip(("data", "fsdp", "tensor"), sizes)]
    overrides += ["--config.train.batch_size=16", f"--config.mesh.zero1={zero1}", "--config.optim.warmup_steps=0"]
    return build_setup(configs.apply_overrides(config, overrides), text_spec, devices)

  batches = np.random.default_rng(0).integers(0, 27, (ZERO1_STEPS, 16, 32)).astype(np.int32)

  def train_steps(setup):
    state = setup.init_state(0)
    init_params = host(state.params)
    step_fn = train.compile_train_step(setup)
    with setup.context():
      key = jax.device_put(jax.random.PRNGKey(7), sharding.replicated(setup.mesh))
      compiled = step_fn.lower(state, sharding.global_batch(batches[0], setup.mesh), key).compile()
      for batch in batches:
        state, metrics = compiled(state, sharding.global_batch(batch, setup.mesh), key)
    mem = compiled.memory_analysis()
    memory = {
      "argument_bytes": int(mem.argument_size_in_bytes),
      "temp_bytes": int(mem.temp_size_in_bytes),
      "state_bytes_per_device": int(sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(state))),
    }
    return state, {k: float(v) for k, v in metrics.items()}, memory, init_params

  def rel_err(a, b):
    errs = [
      float(np.max(np.abs(x.astype(np.float64) - y)) / max(float(np.max(np.abs(x))), 1e-30))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
      if x.size
    ]
    return max(errs)

  def allclose(a, b):
    return all(np.allclose(y, x, rtol=1e-5, atol=1e-6) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  def max_abs_err(a, b):
    return max(
      float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if x.size
    )

  groups = ("params", "ema_params", "opt_state", "lt_mean")
  out = {"meshes": {}}
  kept = {}
  for name, sizes in ZERO1_MESHES.items():
    runs = {}
    for zero1 in (False, True):
      setup = setup_for(sizes, zero1)
      state, metrics, memory, init = train_steps(setup)
      runs[zero1] = {"setup": setup, "state": state, "host": host(state), "metrics": metrics, "memory": memory}
    off, on = runs[False]["host"], runs[True]["host"]
    out["meshes"][name] = {
      "rel_err": {group: rel_err(getattr(off, group), getattr(on, group)) for group in groups},
      "max_abs_err": {group: max_abs_err(getattr(off, group), getattr(on, group)) for group in groups},
      "allclose": {group: allclose(getattr(off, group), getattr(on, group)) for group in groups},
      "params_moved": rel_err(init, off.params) > 1e-4,
      "metrics": {k: (runs[False]["metrics"][k], runs[True]["metrics"][k]) for k in runs[False]["metrics"]},
      "memory": {"off": runs[False]["memory"], "on": runs[True]["memory"]},
    }
    if name == "data":
      kept = runs

  # Layout on the data=8 mesh: optimizer and EMA leaves split 8 ways wherever a dimension allows it.
  on_setup, on_state = kept[True]["setup"], kept[True]["state"]
  split = whole_bytes = split_bytes = 0
  wrong = []
  for path, leaf in jax.tree_util.tree_flatten_with_path((on_state.opt_state, on_state.ema_params))[0]:
    shard = leaf.addressable_shards[0].data.shape
    divisible = any(size % NUM_DEVICES == 0 for size in leaf.shape)
    expected = leaf.size // NUM_DEVICES if divisible else leaf.size
    if int(np.prod(shard)) != expected:
      wrong.append(jax.tree_util.keystr(path))
    split += divisible
    split_bytes += leaf.nbytes if divisible else 0
    whole_bytes += leaf.nbytes
  out["layout"] = {
    "split": split,
    "wrong": wrong,
    "split_fraction_of_bytes": split_bytes / whole_bytes,
    "params_whole": all(
      leaf.addressable_shards[0].data.shape == leaf.shape for leaf in jax.tree.leaves(on_state.params)
    ),
    "log_on": sharding.describe_layout(on_setup.mesh, on_setup.abstract_state, on_setup.state_shardings),
    "log_off": sharding.describe_layout(
      kept[False]["setup"].mesh, kept[False]["setup"].abstract_state, kept[False]["setup"].state_shardings
    ),
  }

  # The placement rule itself.
  mesh8 = on_setup.mesh
  mesh42 = setup_for((4, 2, 1), True).mesh
  rule = lambda mesh, spec, shape: [
    list(e) if isinstance(e, tuple) else e for e in sharding.split_over_axis(NamedSharding(mesh, spec), shape).spec
  ]
  out["rules"] = {
    "(3, 16) on 8": rule(mesh8, P(), (3, 16)),
    "(16, 16) on 8": rule(mesh8, P(), (16, 16)),
    "(5,) on 8": rule(mesh8, P(), (5,)),
    "() on 8": rule(mesh8, P(), ()),
    "(16, 64) fsdp on dim 1, 4x2": rule(mesh42, P(None, "fsdp"), (16, 64)),
    "(8, 6) fsdp on dim 0, 4x2": rule(mesh42, P("fsdp", None), (8, 6)),
    "(6,) on 4x2": rule(mesh42, P(), (6,)),
    "already on data": rule(mesh8, P("data"), (16,)),
  }

  # Checkpoints cross the switch both ways, onto the target layout (8 devices, one device, data x fsdp).
  ckpt = {}
  with tempfile.TemporaryDirectory() as workdir:
    manager = checkpoint.make_manager(workdir)
    for step, zero1 in ((1, True), (2, False)):
      checkpoint.save(manager, step, kept[zero1]["state"], {"step": step})
    manager.wait_until_finished()
    targets = (
      ("on -> off 8x1", 1, (8, 1, 1), False, None),
      ("on -> off 1", 1, (1, 1, 1), False, jax.devices()[:1]),
      ("off -> on 8x1", 2, (8, 1, 1), True, None),
      ("off -> on 4x2", 2, (4, 2, 1), True, None),
    )
    for label, step, sizes, zero1, devices in targets:
      dst = setup_for(sizes, zero1, devices)
      restored, meta = checkpoint.restore(manager, step, dst.abstract_state, dst.state_shardings)
      saved = kept[step == 1]["host"]
      paths = jax.tree_util.tree_flatten_with_path(saved)[0]
      mismatched = [
        jax.tree_util.keystr(p) for (p, a), b in zip(paths, jax.tree.leaves(host(restored))) if not np.array_equal(a, b)
      ]
      placed = all(
        r.sharding.is_equivalent_to(s, r.ndim)
        for r, s in zip(jax.tree.leaves(restored), jax.tree.leaves(dst.state_shardings))
      )
      ckpt[label] = {
        "leaves": len(jax.tree.leaves(restored)),
        "mismatched": mismatched,
        "on_target_shardings": bool(placed and meta["step"] == step),
      }
    manager.close()
  out["checkpoint"] = ckpt

  # Evaluation takes the split EMA as it comes out of training (train.py, workdir.open_workdir).
  items = np.random.default_rng(1).integers(0, 27, (6, 32)).astype(np.int32)
  bpd = {}
  for zero1 in (False, True):
    with kept[zero1]["setup"].context():
      bpd[zero1] = held_out.evaluate_params(
        kept[zero1]["setup"], kept[zero1]["state"].ema_params, items, passes=1, batch_size=6, seed=0
      )["bpd"]
  ema_specs = [leaf.sharding.spec for leaf in jax.tree.leaves(on_state.ema_params)]
  out["eval"] = {"off": bpd[False], "on": bpd[True], "ema_split": any("data" in str(s) for s in ema_specs)}
  return out


if __name__ == "__main__":
  print(json.dumps(_zero1_worker() if sys.argv[1:] == ["zero1"] else _worker()))


def test_jobs_lay_a_trained_model_out_on_the_devices_they_have():
  from ardm_jax import sharding  # noqa: PLC0415  (this module's workers set their device count first)

  fit = sharding.mesh_for_devices
  assert fit({"data": -1, "fsdp": 2, "tensor": 1}, 8) == {"data": -1, "fsdp": 2, "tensor": 1}  # fits: kept as is
  assert fit({"data": 16, "fsdp": 1, "tensor": 1}, 3) == {"data": -1, "fsdp": 1, "tensor": 1}
  assert fit({"data": 2, "fsdp": 4, "tensor": 2}, 8) == {"data": -1, "fsdp": 4, "tensor": 2}  # the split kept
  assert fit({"data": 1, "fsdp": 4, "tensor": 2}, 6) == {"data": -1, "fsdp": 1, "tensor": 2}
  assert fit({"data": 1, "fsdp": 4, "tensor": 3}, 4) == {"data": -1, "fsdp": 4, "tensor": 1}
  assert fit({"data": 4, "fsdp": -1, "tensor": 1}, 3) == {"data": -1, "fsdp": 1, "tensor": 1}
  for cfg, n in (({"data": 16, "fsdp": 1, "tensor": 1}, 3), ({"data": 1, "fsdp": 4, "tensor": 3}, 4)):
    assert sharding.resolve_mesh_shape(fit(cfg, n), n)  # make_mesh accepts every answer
