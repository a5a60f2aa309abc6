"""Policy DP: exact against enumeration of every policy, fast vs plain DP, validation, files, plots."""

import itertools
import json

import numpy as np
import pytest

from ardm_jax import policy as P
from ardm_jax import policy_file, policy_plot


def all_policies(D, budget):
  for rest in itertools.combinations(range(1, D), budget - 1):
    yield np.array((0,) + rest, dtype=np.int64)


def brute_force_cost(L, budget):
  return min(P.policy_cost(L, s) for s in all_policies(L.size, budget))


def assert_valid(steps, D, budget):
  assert steps.dtype == np.int64 and steps.shape == (budget,)
  assert steps[0] == 0 and np.all(np.diff(steps) > 0) and steps[-1] < D


def random_monotone(rng, D):
  """Non-increasing losses with ties, constant stretches and a zero tail."""
  L = np.sort(rng.choice([0.0, 0.5, 1.0, 2.0, 3.5], size=D) * rng.choice([1.0, 1.0, 0.3], size=D))[::-1]
  return L.copy()


@pytest.mark.parametrize("seed", range(12))
def test_dp_equals_enumeration_small(seed):
  rng = np.random.default_rng(seed)
  for D in range(1, 10):
    raw = rng.exponential(size=D) * (rng.random(D) < 0.8)  # arbitrary order, some zeros
    mono = P.monotone_losses(raw, "sort")
    for budget in range(1, D + 1):
      want_raw, want_mono = brute_force_cost(raw, budget), brute_force_cost(mono, budget)
      steps, cost = P.plain_dp(raw, budget)
      assert_valid(steps, D, budget)
      assert cost == pytest.approx(want_raw, rel=1e-12, abs=1e-12)
      assert P.policy_cost(raw, steps) == pytest.approx(want_raw, rel=1e-12, abs=1e-12)
      # monotone=None on unsorted losses takes the exact fallback, over at most `budget` calls
      steps, cost = P.optimal_policies(raw, [budget], monotone=None)[budget]
      want_at_most = min(brute_force_cost(raw, b) for b in range(1, budget + 1))
      assert_valid(steps, D, len(steps))
      assert len(steps) <= budget and cost == pytest.approx(want_at_most, rel=1e-12, abs=1e-12)
      assert P.policy_cost(raw, steps) == pytest.approx(cost, rel=1e-12, abs=1e-12)
      steps, cost = P.optimal_policies(mono, [budget], monotone=None)[budget]  # fast path
      assert_valid(steps, D, budget)
      assert cost == pytest.approx(want_mono, rel=1e-12, abs=1e-12)
      assert P.policy_cost(mono, steps) == pytest.approx(want_mono, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_plain_dp(seed):
  rng = np.random.default_rng(100 + seed)
  D = int(rng.integers(200, 401))
  if seed % 2:
    L = random_monotone(rng, D)
  else:  # smooth curve + noise, sorted: few exact ties
    t = np.arange(D)
    L = P.monotone_losses(3 * (1 - t / D) ** 2 + 0.05 * rng.random(D))
  budgets = [1, 2, 7, 40, D // 2, D - 1, D]
  fast = P.optimal_policies(L, budgets, monotone=None)
  costs = P.optimal_costs(L, D, monotone=None)
  for b in budgets:
    steps, cost = fast[b]
    ref_steps, ref_cost = P.plain_dp(L, b)
    assert_valid(steps, D, b)
    assert cost == pytest.approx(ref_cost, rel=1e-9, abs=1e-12)
    assert P.policy_cost(L, steps) == pytest.approx(cost, rel=1e-9, abs=1e-12)
    assert costs[b - 1] == pytest.approx(cost, rel=1e-12, abs=1e-12)
  assert np.all(np.diff(costs) <= 1e-9 * costs[0])  # more calls never cost more for monotone L


@pytest.mark.parametrize("seed", range(4))
def test_a_larger_budget_never_scores_worse_on_unsorted_losses(seed):
  """A budget allows at most B calls (the official recursion): with L as given (monotone=None) the exact-B optimum
  can cost more than a smaller budget's (forced extra steps start on expensive L_t), so B picks the best b <= B."""
  rng = np.random.default_rng(seed)
  D = 34
  L = rng.random(D) * rng.choice([0.1, 1.0, 10.0], size=D)  # unsorted, with large jumps
  budgets = list(range(1, D + 1))
  pols = P.optimal_policies(L, budgets, monotone=None)
  costs = P.optimal_costs(L, D, monotone=None)
  best = [pols[b][1] for b in budgets]
  assert np.all(np.diff(best) <= 0), best
  np.testing.assert_allclose(costs, best, rtol=1e-12)
  for b in budgets:
    steps, cost = pols[b]
    assert len(steps) <= b and P.policy_cost(L, steps) == pytest.approx(cost, rel=1e-12)
    assert cost == pytest.approx(min(P.plain_dp(L, k)[1] for k in range(1, b + 1)), rel=1e-12)
  # Sorted losses keep exactly B steps for every budget (more calls never cost more there).
  for b, (steps, _) in P.optimal_policies(L, budgets).items():
    assert len(steps) == b


def test_extreme_budgets_and_constant_losses():
  L = np.array([5.0, 3.0, 3.0, 1.0, 0.5, 0.0])
  full = P.optimal_policies(L, [1, L.size], monotone=None)
  np.testing.assert_array_equal(full[L.size][0], np.arange(L.size))
  assert full[L.size][1] == pytest.approx(L.sum())
  np.testing.assert_array_equal(full[1][0], [0])
  assert full[1][1] == pytest.approx(L[0] * L.size)
  for b, (steps, cost) in P.optimal_policies(np.ones(50), range(1, 51)).items():
    assert_valid(steps, 50, b)
    assert cost == pytest.approx(50.0)
  for b, (steps, cost) in P.optimal_policies(np.zeros(30), [1, 3, 30]).items():
    assert_valid(steps, 30, b)
    assert cost == 0.0


def test_naive_policy():
  for D in range(1, 40):
    for b in range(1, D + 1):
      assert_valid(P.naive_policy(D, b), D, b)
  np.testing.assert_array_equal(P.naive_policy(10, 4), [0, 2, 5, 7])


@pytest.mark.parametrize(
  "bad, words",
  [
    ([1.0, np.nan], "NaN"),
    ([1.0, np.inf], "Inf"),
    ([1.0, -0.1], "non-negative"),
    (np.ones((2, 3)), "1-D"),
    ([], "empty"),
  ],
)
def test_bad_losses(bad, words):
  for fn in (lambda: P.optimal_policies(bad, [1]), lambda: P.plain_dp(bad, 1), lambda: P.monotone_losses(bad)):
    with pytest.raises(ValueError, match=words):
      fn()


def test_bad_budgets_and_policies():
  L = np.ones(5)
  for b in (0, -1, 6):
    with pytest.raises(ValueError, match=f"budget {b} is outside 1..D=5"):
      P.optimal_policies(L, [1, b])
  with pytest.raises(ValueError, match="not an integer"):
    P.optimal_policies(L, [2.0])
  with pytest.raises(ValueError, match="budget 0"):
    P.plain_dp(L, 0)
  with pytest.raises(ValueError, match="unknown monotone"):
    P.optimal_policies(L, [1], monotone="sorted")
  for steps in ([1, 2], [0, 2, 2], [0, 5], []):
    with pytest.raises(ValueError):
      P.policy_cost(L, steps)


def brute_isotonic_nonincreasing(y):
  """Closed form of the least-squares non-increasing fit: x_t = min_{i<=t} max_{j>=t} mean(y[i..j])."""
  n = y.size
  return np.array([min(max(y[i : j + 1].mean() for j in range(t, n)) for i in range(t + 1)) for t in range(n)])


def test_monotone_losses():
  np.testing.assert_allclose(P.monotone_losses([1.0, 3.0, 2.0], "isotonic"), [2.0, 2.0, 2.0])
  np.testing.assert_allclose(P.monotone_losses([4.0, 1.0, 3.0, 0.0], "isotonic"), [4.0, 2.0, 2.0, 0.0])
  rng = np.random.default_rng(0)
  for _ in range(20):
    y = rng.exponential(size=int(rng.integers(1, 12)))
    fit = P.monotone_losses(y, "isotonic")
    assert np.all(np.diff(fit) <= 1e-12)
    np.testing.assert_allclose(fit, brute_isotonic_nonincreasing(y), rtol=1e-10)
    np.testing.assert_array_equal(P.monotone_losses(y, "sort"), np.sort(y)[::-1])


def test_split_budget_equals_brute_force():
  rng = np.random.default_rng(3)
  for trial in range(6):
    stages = [rng.exponential(size=int(rng.integers(1, 7))) for _ in range(2 + trial % 2)]
    mono = [P.monotone_losses(L) for L in stages]
    for total in range(len(stages), sum(L.size for L in stages) + 1):
      split = P.split_budget_across_stages(stages, total)
      assert sum(split) == total and all(1 <= b <= L.size for b, L in zip(split, stages))
      want = min(
        sum(brute_force_cost(L, b) for L, b in zip(mono, bs))
        for bs in itertools.product(*[range(1, L.size + 1) for L in stages])
        if sum(bs) == total
      )
      got = sum(brute_force_cost(L, b) for L, b in zip(mono, split))
      assert got == pytest.approx(want, rel=1e-12)
  with pytest.raises(ValueError, match="outside 2..5"):
    P.split_budget_across_stages([np.ones(2), np.ones(3)], 6)


def make_file(tmp_path):
  rng = np.random.default_rng(1)
  stages = [P.monotone_losses(rng.exponential(size=20)) for _ in range(2)]
  pf = policy_file.build_policy_file(
    stages,
    [1, 5, 20],
    num_dims=20,
    stage_stderrs=[0.1 * s for s in stages],
    fingerprint={"checkpoint_step": 7},
    total_budgets=[9],
  )
  return pf, stages


def test_policy_file_round_trip_and_errors(tmp_path):
  pf, stages = make_file(tmp_path)
  path = tmp_path / "policy.json"
  policy_file.save_policy_file(path, pf)
  assert policy_file.load_policy_file(path) == pf
  np.testing.assert_array_equal(policy_file.policy_for_budget(pf, 20, stage=1), np.arange(20))
  split = pf["total_budget_split"]["9"]["stage_budgets"]
  assert split == P.split_budget_across_stages(stages, 9)
  for s, b in enumerate(split):
    steps = policy_file.policy_for_budget(pf, b, stage=s)
    assert pf["stages"][s]["policies"][str(b)]["expected_bpd"] == pytest.approx(P.policy_cost(stages[s], steps) / 20)
  p5 = pf["stages"][0]["policies"]["5"]
  assert p5["expected_bpd"] <= p5["naive_expected_bpd"]

  with pytest.raises(FileExistsError, match="--overwrite"):
    policy_file.save_policy_file(path, pf)
  policy_file.save_policy_file(path, pf, overwrite=True)
  have = sorted(int(b) for b in pf["stages"][0]["policies"])
  assert {1, 5, 20} <= set(have) and 19 not in have
  with pytest.raises(ValueError, match=r"budget 19 .* available budgets: \[" + ", ".join(map(str, have))):
    policy_file.policy_for_budget(pf, 19)
  with pytest.raises(ValueError, match="stage 2"):
    policy_file.policy_for_budget(pf, 5, stage=2)

  bad = dict(pf, schema_version=2)
  path.write_text(json.dumps(bad))
  with pytest.raises(ValueError, match="schema_version 2"):
    policy_file.load_policy_file(path)
  broken = json.loads(json.dumps(pf))
  broken["stages"][0]["policies"]["5"]["steps"] = [0, 3, 2, 4, 5]
  path.write_text(json.dumps(broken))
  with pytest.raises(ValueError, match="strictly increase"):
    policy_file.load_policy_file(path)


def test_load_loss_file(tmp_path):
  L = np.linspace(2, 0, 7)
  np.save(tmp_path / "l.npy", L)
  np.testing.assert_array_equal(policy_file.load_loss_file(tmp_path / "l.npy")[0], L)
  (tmp_path / "list.json").write_text(json.dumps(L.tolist()))
  np.testing.assert_array_equal(policy_file.load_loss_file(tmp_path / "list.json")[0], L)
  (tmp_path / "d.json").write_text(json.dumps({"loss_per_step": L.tolist(), "loss_stderr": [0.1] * 7}))
  got, err = policy_file.load_loss_file(tmp_path / "d.json")
  np.testing.assert_array_equal(got, L)
  np.testing.assert_array_equal(err, [0.1] * 7)
  pf, stages = make_file(tmp_path)
  policy_file.save_policy_file(tmp_path / "p.json", pf)
  np.testing.assert_array_equal(policy_file.load_loss_file(tmp_path / "p.json", stage=1)[0], stages[1])
  (tmp_path / "x.json").write_text(json.dumps({"losses": [1.0]}))
  with pytest.raises(ValueError, match="loss_per_step"):
    policy_file.load_loss_file(tmp_path / "x.json")
  (tmp_path / "x.txt").write_text("1 2")
  with pytest.raises(ValueError, match=".npy"):
    policy_file.load_loss_file(tmp_path / "x.txt")
  np.save(tmp_path / "bad.npy", np.ones((2, 2)))
  with pytest.raises(ValueError, match="1-D"):
    policy_file.load_loss_file(tmp_path / "bad.npy")


def test_plot_writes_png(tmp_path):
  L = P.monotone_losses(np.random.default_rng(0).exponential(size=64))
  budgets = [1, 4, 16, 64]
  pols = P.optimal_policies(L, budgets)
  dp = [pols[b][1] / 64 for b in budgets]
  naive = [P.policy_cost(L, P.naive_policy(64, b)) / 64 for b in budgets]
  out = tmp_path / "policy.png"
  policy_plot.plot_policy(out, L, 0.05 * L, budgets, dp, naive, num_dims=64)
  from PIL import Image

  img = np.asarray(Image.open(out).convert("RGB")).astype(int)
  assert img.shape == (400, 1100, 3)  # figsize (11, 4) at 100 dpi
  left, right = img[:, :550], img[:, 550:]

  def has(panel, rgb, tol=40):  # pixels close to a matplotlib default colour
    return int((np.abs(panel - np.array(rgb)).sum(-1) < tol).sum())

  blue, orange = (31, 119, 180), (255, 127, 14)  # matplotlib's C0 (L_t, the DP curve) and C1 (the naive curve)
  assert has(left, blue) > 100 and has(right, blue) > 100 and has(right, orange) > 100
  # The +-2 stderr band: a translucent fill, light blue pixels in the L_t panel.
  assert has(left, (187, 213, 232), tol=20) > 1000


def test_check_policy_steps_errors():
  for bad in ([1, 2], [0, 2, 2], [0, 4], [], [[0]]):
    with pytest.raises(ValueError, match="policy"):
      P.check_policy_steps(bad, 4)
  assert P.check_policy_steps([0, 3], 4).tolist() == [0, 3]
