"""Upscale and audio models through the jobs (train -> policy -> eval -> sample -> inpaint), and the global
policies over stages that those jobs use."""

import json
import os

from conftest import expect_error, newest_result, run
import numpy as np
import pytest

from ardm_jax import coding_items, coding_model, coding_policy, data, policy, policy_file, sample, upscale, workdir
from ardm_jax.data import audio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(os.path.dirname(REPO), "shared", "data", "fsdd", "fsdd_8khz.npz")


def test_naive_global_policy_splits_equally_and_starts_every_stage():
  steps = policy.naive_global_policy(3, 10, 7)  # stage budgets 3, 2, 2
  np.testing.assert_array_equal(steps, [0, 3, 6, 10, 15, 20, 25])
  upscale.validate_policy(steps, 10, 3)
  with pytest.raises(ValueError, match="total budget 2"):
    policy.naive_global_policy(3, 10, 2)


def _stage_steps(global_steps, num_steps, num_stages):
  """A global policy's steps per stage, each counted from its stage's start."""
  g = np.asarray(global_steps)
  return [g[(g >= s * num_steps) & (g < (s + 1) * num_steps)] - s * num_steps for s in range(num_stages)]


def test_global_policy_from_file_is_the_optimal_split():
  rng = np.random.default_rng(0)
  losses = [np.sort(rng.random(6))[::-1] * c for c in (3.0, 1.0)]
  pf = policy_file.build_policy_file(losses, [], 6, total_budgets=[4, 7])
  for total in (4, 7):
    # Brute force over the splits of the total budget, each stage's policy the DP optimum for its share.
    splits = [(b, total - b) for b in range(1, total) if total - b >= 1 and max(b, total - b) <= 6]
    cost_of = lambda split: sum(policy.optimal_policies(L, [b])[b][1] for L, b in zip(losses, split))
    best = min(splits, key=cost_of)
    expected = np.concatenate(
      [policy.optimal_policies(L, [b])[b][0] + s * 6 for s, (L, b) in enumerate(zip(losses, best))]
    )
    np.testing.assert_array_equal(policy_file.global_policy(pf, total), expected)
    entry = pf["total_budget_split"][str(total)]
    assert entry["stage_budgets"] == list(best) and entry["expected_bpd"] == pytest.approx(cost_of(best) / 6)
    naive = policy.naive_global_policy(2, 6, total)
    naive_cost = sum(policy.policy_cost(L, st) for L, st in zip(losses, _stage_steps(naive, 6, 2)))
    assert entry["naive_expected_bpd"] == pytest.approx(naive_cost / 6) and cost_of(best) <= naive_cost + 1e-12
  with pytest.raises(ValueError, match="no split of total budget 5"):
    policy_file.global_policy(pf, 5)


@pytest.fixture(scope="module")
def upscale_workdir(tmp_path_factory):
  w = tmp_path_factory.mktemp("upscale") / "digits_upscale"
  run(
    "train",
    "--config",
    os.path.join(REPO, "experiments", "digits_upscale.py:tiny"),
    "--workdir",
    w,
    "--config.train.eval_passes=0",
  )
  return w


@pytest.mark.xdist_group("test_upscale_jobs")
def test_upscale_model_policy_eval_sample_and_inpaint(upscale_workdir, capsys):
  w = upscale_workdir
  model = workdir.open_workdir(str(w))
  S, D = model.setup.objective.num_stages, model.spec.num_steps
  assert (S, D) == (3, 64)
  _, counts = workdir.restore_tracker(model)
  assert counts.shape == (S * D,) and counts.sum() == 8 * 4  # batch 8, 4 steps: the tracker spans all stages

  run("policy", "--workdir", w, "--budgets", "3,9", "--samples", "2")
  pf = json.load(open(w / "policy.json"))
  assert len(pf["stages"]) == S and sum(pf["total_budget_split"]["9"]["stage_budgets"]) == 9
  steps = sample.choose_policy(model, 9)
  assert len(steps) == 9 and {0, D, 2 * D} <= set(steps.tolist())
  assert "| 9 |" in capsys.readouterr().out

  run("eval", "--workdir", w, "--budget", "9", "--exact")
  result = newest_result(w, "eval_budget9_exact")
  assert result["budget"] == 9 and 0 < result["bpd"] < 10

  x = sample.sample(model, 4, steps)
  assert x.shape == (4, 8, 8, 1) and x.min() >= 0 and x.max() < 17
  run("sample", "--workdir", w, "--num", "4", "--budget", "9", "--naive", "--out", w / "naive.png")
  assert os.path.getsize(w / "naive.png") > 0

  item = data.load(model.config.data).eval_items("test")[0]
  observed = np.zeros(item.shape, bool)
  observed[:4] = True
  for budget, naive in ((None, False), (6, True), (6, False)):
    done = sample.complete(model, item, observed, 3, budget=budget, naive=naive)
    assert (done[:, observed] == item[observed]).all() and done.max() < 17
  with pytest.raises(ValueError, match="between 3 and"):
    sample.choose_policy(model, 2, naive=True)


@pytest.mark.xdist_group("test_upscale_jobs")
def test_lt_estimate_with_a_stride_measures_every_kth_step_per_stage_and_interpolates(upscale_workdir):
  """`ardm policy --stride k`: per stage, steps 0, k, 2k, ... and D - 1 are measured (the same draws as measuring
  those steps alone), the rest lie on the line between their measured neighbours, never across a stage boundary."""
  from ardm_jax import held_out

  model = workdir.open_workdir(str(upscale_workdir))
  S, D, k = 3, 64, 5
  items = data.load(model.config.data).eval_items("test")
  with model.setup.context():
    mean, stderr = held_out.estimate_lt(
      model.setup, model.params, items, samples_per_step=2, batch_size=32, seed=3, stride=k
    )
    t_measured = np.r_[np.arange(0, D, k), D - 1]
    steps = (np.arange(S)[:, None] * D + t_measured).ravel().astype(np.int32)
    direct, _ = held_out._estimate_steps(model.setup, model.params, items, steps, 2, 32, 3, 30.0)
  assert mean.shape == stderr.shape == (S * D,)
  np.testing.assert_array_equal(mean[steps], direct)
  for s in range(S):
    np.testing.assert_allclose(mean[s * D : (s + 1) * D], np.interp(np.arange(D), t_measured, direct.reshape(S, -1)[s]))
  with pytest.raises(ValueError, match="--stride must be at least 1"):
    held_out.estimate_lt(model.setup, model.params, items, samples_per_step=2, batch_size=32, seed=3, stride=0)


@pytest.mark.xdist_group("test_upscale_jobs")
def test_equal_budget_split_reaches_policy_eval_sample_and_compress(upscale_workdir, tmp_path, capsys):
  """--budget-split equal (the paper's Table 7) gives every stage the same budget in every job; optimal differs."""

  w, out, D = upscale_workdir, tmp_path / "policy.json", 64
  run("policy", "--workdir", w, "--budgets", "9", "--samples", "2", "--budget-split", "equal", "--out", out)
  assert "split equally" in capsys.readouterr().out
  pf = json.load(open(out))
  optimal_budgets = pf["total_budget_split"]["9"]["stage_budgets"]
  assert pf["total_budget_split_equal"]["9"]["stage_budgets"] == [3, 3, 3] and optimal_budgets != [3, 3, 3]
  model = workdir.open_workdir(str(w))
  per_stage = lambda steps: np.bincount(np.asarray(steps) // D, minlength=3).tolist()
  assert per_stage(sample.choose_policy(model, 9, policy_file=str(out), split="equal")) == [3, 3, 3]
  assert per_stage(sample.choose_policy(model, 9, policy_file=str(out))) == optimal_budgets
  assert per_stage(sample.choose_policy(model, 9, policy_file=str(out), start=5, split="equal")) == [3, 3, 3]

  run("eval", "--workdir", w, "--budget", "9", "--policy", out, "--budget-split", "equal")
  assert newest_result(w, "eval_budget9_equal")["budget_split"] == "equal"
  run(
    "sample",
    "--workdir",
    w,
    "--num",
    "2",
    "--budget",
    "9",
    "--policy",
    out,
    "--budget-split",
    "equal",
    "--out",
    tmp_path / "equal.png",
  )
  assert "(9 network calls" in capsys.readouterr().out and os.path.getsize(tmp_path / "equal.png") > 0
  cm = coding_model.open_coding_model(str(w))
  steps, label = coding_policy.encoder_policy(cm, 9, policy_file=str(out), split="equal")
  assert per_stage(steps) == [3, 3, 3] and label == "DP-optimal, equal split"
  item = data.load(model.config.data).eval_items("test")[:1]
  blob, _ = coding_items.compress_items(cm, item, mode="item", steps=steps, order_seed=0)
  _, decoded, _ = coding_items.decompress_items(cm, blob, policy_file=str(out))  # finds the split by the policy hash
  np.testing.assert_array_equal(decoded, item)


def test_fsdd_tiny_trains_evaluates_and_samples_wav(tmp_path, capsys):
  if not os.path.exists(FSDD):
    if os.environ.get("CI") == "true":
      pytest.fail(f"{FSDD} is missing in CI: the shared data folder must sit beside the repository")
    pytest.skip("shared data not present")
  w = tmp_path / "fsdd"
  run(
    "train",
    "--config",
    os.path.join(REPO, "experiments", "fsdd.py:tiny"),
    "--workdir",
    w,
    f"--config.data.path={FSDD!r}",
  )
  assert "bits/sample" in capsys.readouterr().out
  run("eval", "--workdir", w)
  result = newest_result(w)
  assert result["unit"] == "bits/sample" and 0 < result["bpd"] < 17  # an untrained model: about 16
  run("sample", "--workdir", w, "--num", "2", "--budget", "4", "--naive", "--out", tmp_path / "wavs")
  files = sorted(os.listdir(tmp_path / "wavs"))
  assert files == ["sample_000.wav", "sample_001.wav"]
  pcm, rate = audio.read_wav(str(tmp_path / "wavs" / files[0]))
  assert rate == 8000 and pcm.shape == (64,)

  # Audio completion: a shorter clip with a gap; the given samples come back exactly, the gap and the rest of the
  # model's length are generated.
  clip = (np.arange(40, dtype=np.int64) * 700 - 14000).astype(np.int16)
  audio.write_wav(tmp_path / "clip.wav", audio.pcm_to_classes(clip), 8000)
  run("inpaint", "--workdir", w, "--input", tmp_path / "clip.wav", "--gap", "0.001:0.002", "--num", "2")
  done = sorted(os.listdir(tmp_path / "clip.completed"))
  assert done == ["sample_000.wav", "sample_001.wav"] and "(32 of 64 values given)" in capsys.readouterr().out
  given = np.r_[0:8, 16:40]
  for name in done:
    pcm, rate = audio.read_wav(str(tmp_path / "clip.completed" / name))
    assert rate == 8000 and pcm.shape == (64,)
    np.testing.assert_array_equal(pcm[given], clip[given])
  clip_file = tmp_path / "clip.wav"
  expect_error(
    capsys, "inpaint", "--workdir", w, "--input", clip_file, "--mask", clip_file, match="--mask is for images"
  )
  expect_error(capsys, "inpaint", "--workdir", w, "--input", clip_file, "--gap", "2:1", match="must be START:END")
  expect_error(
    capsys, "inpaint", "--workdir", w, "--input", clip_file, "--gap", "0.5:0.6", match="after the clip's end"
  )
