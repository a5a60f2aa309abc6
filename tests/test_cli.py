"""CLI smoke test: train tiny -> eval -> policy -> sample -> inpaint, the one-line errors, partial restores and
the persistent compilation cache."""

import json
import os
import shutil

from conftest import expect_error, newest_result, restore_full_state, run
import numpy as np
from PIL import Image
import pytest

from ardm_jax import checkpoint, compile_cache, file_io, held_out
from ardm_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_TINY = os.path.join(REPO, "experiments", "digits.py:tiny")
TEXT_TINY = os.path.join(REPO, "experiments", "local_text.py:tiny")


@pytest.fixture(scope="module", autouse=True)
def compile_cache_dir(tmp_path_factory):
  """The commands here cache their compiles in a fresh folder (not the user's); off again afterwards."""
  path = tmp_path_factory.mktemp("jax_cache")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(compile_cache.ENV_VAR, str(path))
    yield path
    mp.setenv(compile_cache.ENV_VAR, "")
    compile_cache.enable()


@pytest.fixture(scope="module")
def digits_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cli") / "digits"
  run("train", "--config", DIGITS_TINY, "--workdir", workdir)
  return workdir


@pytest.mark.xdist_group("test_cli")
def test_eval_writes_json_and_never_replaces_a_result(digits_workdir, capsys):
  run("eval", "--workdir", digits_workdir, "--passes", "2")
  first = digits_workdir / "eval_step4.json"
  result = json.loads(first.read_text())
  assert {"bpd", "stderr", "passes", "split", "step", "params"} <= set(result)
  assert result["passes"] == 2 and result["split"] == "test" and result["params"] == "ema"
  assert 0 < result["bpd"] < 10 and result["stderr"] >= 0
  assert "bits/dim" in capsys.readouterr().out
  # The one rule for default outputs: a rerun adds a file and leaves the earlier one as it was (eval, sample) ...
  before = first.read_text()
  run("eval", "--workdir", digits_workdir, "--passes", "1")
  assert first.read_text() == before and json.load(open(digits_workdir / "eval_step4-1.json"))["passes"] == 1
  assert "eval_step4-1.json" in capsys.readouterr().out
  # ... and an explicit --out is replaced only with --overwrite.
  expect_error(capsys, "eval", "--workdir", digits_workdir, "--out", first, match="pass --overwrite")
  assert first.read_text() == before


@pytest.mark.xdist_group("test_cli")
def test_policy_sample_and_budget_eval(digits_workdir, capsys):
  run("policy", "--workdir", digits_workdir, "--budgets", "2,8", "--samples", "2")
  pf = json.load(open(digits_workdir / "policy.json"))
  steps = pf["stages"][0]["policies"]["8"]["steps"]
  assert len(steps) == 8 and steps[0] == 0 and os.path.getsize(digits_workdir / "policy.png") > 0
  assert pf["fingerprint"]["step"] == 4
  expect_error(capsys, "policy", "--workdir", digits_workdir, "--budgets", "2", match="exists")
  run("eval", "--workdir", digits_workdir, "--budget", "8")
  result = newest_result(digits_workdir, "eval_budget8")
  assert result["budget"] == 8 and result["policy"] == "dp"
  out = digits_workdir / "s.png"
  run("sample", "--workdir", digits_workdir, "--num", "4", "--budget", "8", "--out", out)
  assert Image.open(out).size[0] > 8
  expect_error(capsys, "sample", "--workdir", digits_workdir, "--num", "4", "--out", out, match="--overwrite")
  expect_error(capsys, "sample", "--workdir", digits_workdir, "--budget", "3", match="no policy for budget 3")


@pytest.mark.xdist_group("test_cli")
def test_inpaint_keeps_given_pixels(digits_workdir, tmp_path):
  item = (np.arange(64).reshape(8, 8) % 17).astype(np.int64)
  np.save(tmp_path / "digit.npy", item)
  run("inpaint", "--workdir", digits_workdir, "--input", tmp_path / "digit.npy", "--num", "3")
  # The PNG is a grid of the 3 completions (2 x 2 tiles of 8 x 8, 1-pixel white padding), upscaled 4 times.
  grid = np.asarray(Image.open(tmp_path / "digit.completed.png"))[::4, ::4]
  assert grid.shape == (19, 19)
  levels = file_io.to_uint8(np.arange(17), 17)
  for i in range(3):
    r, q = divmod(i, 2)
    tile = grid[1 + 9 * r : 9 + 9 * r, 1 + 9 * q : 9 + 9 * q]
    assert np.isin(tile, levels).all()  # every completed pixel is one of the model's 17 levels
    completed = file_io.from_uint8(tile, 17)
    np.testing.assert_array_equal(completed[:4], item[:4])  # the given pixels (the default mask: the top half)


@pytest.mark.xdist_group("test_cli")
def test_errors_are_one_line(digits_workdir, tmp_path, capsys):
  expect_error(capsys, "eval", "--workdir", tmp_path / "nothing", match="not a training workdir")
  expect_error(
    capsys,
    "train",
    "--config",
    DIGITS_TINY,
    "--workdir",
    tmp_path / "x",
    "--config.train.nope=1",
    match="unknown config key",
  )
  expect_error(capsys, "eval", "--workdir", digits_workdir, "--split", "valid", match="does not exist")
  expect_error(capsys, "sample", "--workdir", digits_workdir, "--budget", "65", "--naive", match="between 1 and")
  bad = tmp_path / "bad.npy"
  np.save(bad, np.full((8, 8), 40))
  expect_error(capsys, "inpaint", "--workdir", digits_workdir, "--input", bad, match="outside 0..16")
  expect_error(
    capsys,
    "policy",
    "--loss-file",
    tmp_path / "missing.npy",
    "--budgets",
    "2",
    "--out",
    tmp_path / "p.json",
    match="missing.npy",
  )


def test_argparse_errors_are_one_line_too(capsys):
  """argparse's own errors (a missing required flag, an unknown flag, a bad choice or command) end like every other
  error: one line `ardm CMD: error: ...` naming the fix, exit code 2, no usage block."""
  expect_error(capsys, "eval", "--passes", "2", match="ardm eval: error: one of the arguments --workdir --model")
  expect_error(capsys, "sample", "--workdir", "w", "--nmu", "3", match="ardm sample: error: unrecognized arguments")
  expect_error(capsys, "compress", "--workdir", "w", "x.png", "-o", "y", "--mode", "zip", match="invalid choice")
  expect_error(capsys, "evaluate", match="ardm: error: argument")
  for argv in (["eval", "--passes", "2"], ["sample", "--workdir", "w", "--nmu", "3"]):
    with pytest.raises(SystemExit):
      run(*argv)
    assert "--help" in capsys.readouterr().err  # where to look


def test_text_model_sample_and_infill(tmp_path):
  text = tmp_path / "input.txt"
  text.write_text("the quick brown fox jumps over the lazy dog " * 100)
  workdir = tmp_path / "text"
  run("train", "--config", TEXT_TINY, "--workdir", workdir, f"--config.data.path={str(text)!r}")
  run("sample", "--workdir", workdir, "--num", "3", "--budget", "4", "--naive", "--out", tmp_path / "s.txt")
  lines = (tmp_path / "s.txt").read_text().splitlines()
  assert len(lines) == 3 and all(len(line) == 32 for line in lines)
  gap = tmp_path / "gap.txt"
  gap.write_text("the quick ____n fox")
  run("inpaint", "--workdir", workdir, "--input", gap, "--num", "2")
  done = (tmp_path / "gap.completed.txt").read_text().splitlines()
  assert len(done) == 2 and all(d.startswith("the quick ") and d[14:19] == "n fox" for d in done)


def test_compile_cache_location_env_then_config_then_user_cache(monkeypatch, tmp_path):
  import ml_collections  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict({"compile_cache_dir": str(tmp_path / "from_config")})
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
  assert compile_cache.resolve_dir(config) == str(tmp_path / "from_env")
  monkeypatch.setenv(compile_cache.ENV_VAR, "")
  assert compile_cache.resolve_dir(config) is None
  monkeypatch.delenv(compile_cache.ENV_VAR)
  assert compile_cache.resolve_dir(config) == str(tmp_path / "from_config")
  assert compile_cache.resolve_dir(ml_collections.ConfigDict({"compile_cache_dir": ""})) is None
  assert compile_cache.resolve_dir(ml_collections.ConfigDict({"compile_cache_dir": "gs://b/c"})) == "gs://b/c"
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  expected = str(tmp_path / "xdg" / "ardm_jax" / "jax_cache")
  assert compile_cache.resolve_dir(ml_collections.ConfigDict({"compile_cache_dir": None})) == expected
  assert compile_cache.resolve_dir(None) == expected


@pytest.mark.xdist_group("test_cli")
def test_commands_fill_the_compile_cache(digits_workdir, compile_cache_dir):
  # The module fixture points ARDM_COMPILE_CACHE here; training and the jobs above wrote their programs into it.
  run("eval", "--workdir", digits_workdir, "--passes", "1")
  import jax  # pylint: disable=import-outside-toplevel

  assert jax.config.jax_compilation_cache_dir == str(compile_cache_dir)
  assert len(os.listdir(compile_cache_dir)) > 0


@pytest.mark.xdist_group("test_cli")
def test_jobs_restore_only_the_parameters_they_use(digits_workdir):
  model = workdir_lib.open_workdir(str(digits_workdir))
  raw = workdir_lib.open_workdir(str(digits_workdir), use_ema=False)
  state = restore_full_state(model)
  import jax  # pylint: disable=import-outside-toplevel

  for restored, full in ((model.params, state.ema_params), (raw.params, state.params)):
    assert jax.tree.structure(restored) == jax.tree.structure(full)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(full)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  means, counts = workdir_lib.restore_tracker(model)
  np.testing.assert_array_equal(counts, np.asarray(state.lt_count))
  np.testing.assert_array_equal(means, np.where(counts > 0, np.asarray(state.lt_mean), np.nan))
  # A partial restore reads only the requested fields: no optimizer state, no second copy of the parameters.
  manager = checkpoint.make_manager(str(digits_workdir), async_save=False)
  try:
    only = checkpoint.restore_fields(
      manager, model.step, model.setup.abstract_state, model.setup.state_shardings, ("step",)
    )
  finally:
    manager.close()
  assert set(only) == {"step"} and int(only["step"]) == model.step


@pytest.mark.xdist_group("test_cli")
def test_estimate_lt_reuses_one_compiled_function(digits_workdir):
  model = workdir_lib.open_workdir(str(digits_workdir))
  items = np.zeros((4,) + model.spec.shape, np.int32)
  kwargs = dict(samples_per_step=2, batch_size=16, seed=0)
  with model.setup.context():
    first = held_out.estimate_lt(model.setup, model.params, items, **kwargs)
    size = held_out._lt_bits._cache_size()  # pylint: disable=protected-access
    second = held_out.estimate_lt(model.setup, model.params, items, **kwargs)
    assert held_out._lt_bits._cache_size() == size  # pylint: disable=protected-access
  np.testing.assert_array_equal(first[0], second[0])


@pytest.mark.xdist_group("test_cli")
def test_eval_orders_writes_the_bound_curve_beside_the_elbo(digits_workdir, capsys):
  """`ardm eval --orders K` (ardm_jax/order_bound.py, exact checks in test_order_bound.py) writes its own file."""

  def elbo_results():
    return {p.name: p.read_text() for p in digits_workdir.glob("eval_step*.json")}

  before = elbo_results()
  run(
    "eval",
    "--workdir",
    digits_workdir,
    "--orders",
    "4",
    "--budget",
    "3",
    "--naive",
    "--passes",
    "2",
    "--num-items",
    "60",
  )
  out = capsys.readouterr().out
  result = newest_result(digits_workdir, "eval_orders_4_b3_naive_items60")
  assert elbo_results() == before
  assert [row["k"] for row in result["curve"]] == [1, 2, 4] and result["num_items"] == 60
  assert result["budget"] == 3 and result["elbo"]["passes"] == 2 and result["unit"] == "bits/dim"
  # Item by item the bound at K is at most the mean of its K per-order bits (Jensen), whatever the draws; the
  # curve itself decreases only in expectation.
  assert result["curve"][-1]["bpd"] <= result["order_mean"]["bpd"]
  assert result["gain_over_elbo"]["bits"] == pytest.approx(result["elbo"]["bpd"] - result["curve"][-1]["bpd"])
  assert "| 4 |" in out and "below the ELBO" in out
  expect_error(capsys, "eval", "--workdir", digits_workdir, "--orders", "0", match="--orders must be an integer >= 1")
  expect_error(
    capsys, "eval", "--workdir", digits_workdir, "--orders", "2", "--budget", "3", "--exact", match="drop --exact"
  )
  expect_error(capsys, "eval", "--workdir", digits_workdir, "--orders", "2", "--naive", match="pass --budget")
  expect_error(capsys, "eval", "--workdir", digits_workdir, "--num-items", "301", match="between 1 and the 300 items")
  # The plain ELBO on a subset goes to its own file too: eval_stepN.json keeps meaning every item of the split.
  run("eval", "--workdir", digits_workdir, "--num-items", "20")
  assert newest_result(digits_workdir, "eval_items20")["num_items"] == 20
  assert elbo_results() == before


# Every job that opens a trained model takes --step (a model folder refuses it: it holds one step).
MODEL_JOBS = ("eval", "policy", "sample", "inpaint", "compress", "decompress", "export")


def test_every_model_job_accepts_step():
  from ardm_jax import cli  # noqa: PLC0415

  for command in MODEL_JOBS:
    parser, _ = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert "--step" in sub._option_string_actions, command


@pytest.mark.xdist_group("test_cli")
def test_step_chooses_the_checkpoint_of_every_model_job(digits_workdir, tmp_path, capsys):
  """A newer checkpoint with other parameters beside the run's last one: each job runs the one --step names (the
  older), and records it."""
  import jax  # noqa: PLC0415

  w = tmp_path / "w"
  shutil.copytree(digits_workdir, w)
  for name in ("policy.json", "policy.png"):
    (w / name).unlink(missing_ok=True)
  model = workdir_lib.open_workdir(str(w))
  old, latest = model.step, model.step + 1
  state = restore_full_state(model)
  state = state.replace(step=state.step + 1, ema_params=jax.tree.map(lambda p: 50.0 * p, state.ema_params))
  manager = checkpoint.make_manager(str(w), async_save=False)
  checkpoint.save(manager, latest, state, {"step": latest, "config_hash": model.config_hash})
  manager.close()

  run("sample", "--workdir", w, "--num", "4")
  run("sample", "--workdir", w, "--num", "4", "--step", old)
  assert f"step {old}," in capsys.readouterr().out
  new_pixels = np.asarray(Image.open(w / f"samples_step{latest}.png"))
  old_pixels = np.asarray(Image.open(w / f"samples_step{old}.png"))
  assert new_pixels.shape == old_pixels.shape and not np.array_equal(new_pixels, old_pixels)

  run("eval", "--workdir", w, "--step", old)
  assert newest_result(w)["step"] == old
  run("policy", "--workdir", w, "--budgets", "2", "--samples", "2", "--step", old, "--out", w / "p_old.json")
  assert json.load(open(w / "p_old.json"))["fingerprint"]["step"] == old
  np.save(tmp_path / "digit.npy", np.zeros((8, 8), np.int64))
  run("inpaint", "--workdir", w, "--input", tmp_path / "digit.npy", "--num", "1", "--step", old)
  assert (tmp_path / "digit.completed.png").exists()
  run("export", "--workdir", w, "--step", old, "-o", tmp_path / "m_old")
  assert json.load(open(tmp_path / "m_old" / "config.json"))["step"] == old

  # A file compressed with the older parameters decodes only with them.
  run("compress", "--workdir", w, "--step", old, tmp_path / "digit.npy", "-o", tmp_path / "d.ardm")
  out = tmp_path / "out"
  expect_error(capsys, "decompress", "--workdir", w, tmp_path / "d.ardm", "-o", out, match="fingerprint mismatch")
  run("decompress", "--workdir", w, "--step", old, tmp_path / "d.ardm", "-o", out)
  np.testing.assert_array_equal(np.load(out / "item_0000.npy"), np.zeros((8, 8)))
  expect_error(capsys, "sample", "--model", tmp_path / "m_old", "--step", old, "--out", w / "x.png", match="--step")


@pytest.mark.xdist_group("test_cli")
def test_a_run_trained_on_16_devices_opens_on_the_devices_a_job_has(digits_workdir, tmp_path, capsys):
  """The workdir of `--config.mesh.data=16` (its config.json says so; a checkpoint restores onto any layout): the
  jobs lay it out on this process's device instead of refusing the mesh."""
  w = tmp_path / "w16"
  shutil.copytree(digits_workdir, w)
  config = json.loads((w / "config.json").read_text())
  config["mesh"].update(data=16, fsdp=1, tensor=1)
  (w / "config.json").write_text(json.dumps(config))
  model = workdir_lib.open_workdir(str(w))
  assert dict(model.setup.mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
  run("eval", "--workdir", w, "--num-items", "8")
  run("sample", "--workdir", w, "--num", "2")
  out = capsys.readouterr().out
  assert "bits/dim" in out and (w / f"samples_step{model.step}.png").exists()


def test_readme_cli_table_matches_each_commands_options():
  """Every flag of a command's row in the README's CLI table is one of its options, and every option is there."""
  import re  # noqa: PLC0415

  from ardm_jax import cli  # noqa: PLC0415

  readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
  rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `ardm (\w+) .*$", readme, re.M)}
  assert sorted(rows) == sorted(cli.COMMANDS)
  for command, row in rows.items():
    usage = row.split("` |")[0]
    parser, _ = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    options = {s for a in sub._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
    written = set(re.findall(r"(?<![\w.])--[a-z][\w-]*", usage)) - {"--config"}
    written |= {"--config"} if "--config CFG" in usage else set()  # not the --config.k=v overrides
    written |= {"--out"} if " -o " in usage else set()
    assert written == options, (command, sorted(written - options), sorted(options - written))
