"""Parallel generation policies for (upscale) OA-ARDMs: per-step losses -> optimal step schedules.

NumPy only. A policy for D steps is an increasing int array [0 = s_0 < ... < s_{B-1}] < D; call k generates the
variables with sigma in [s_k, s_{k+1}) (s_B := D), so its expected cost in bits per data item is
C = sum_k L[s_k] * (s_{k+1} - s_k) for per-step losses L in bits per variable. Expected bits/dim = C / num_dims.

Finding the cheapest policy with exactly b steps is a shortest path with b edges. Layer k of the dynamic programme,
    F_k(j) = min_{k-1 <= i < j} F_{k-1}(i) + L[i] * (j - i),     F_1(j) = L[0] * j,
is the cheapest cover of steps [0, j) by k segments starting at 0, and one pass up to the largest budget serves every
smaller budget. A budget B allows at most B calls, as in the official recursion: its answer is min_{b <= B} F_b(D).
For non-increasing L that is F_B(D) itself (splitting a segment never costs more); for L as given it keeps a larger
budget from scoring worse than a smaller one.

This module is the algorithm only (losses in, steps and costs out); the policy file that stores its results, and
its plot, live in `policy_file`. NumPy only (scipy for the isotonic fit), so `ardm policy` never imports JAX.
"""

import numpy as np

MONOTONE_METHODS = ("sort", "isotonic")
# How a total budget is divided over the stages of an upscale model: 'optimal' minimises the summed DP cost,
# 'equal' gives every stage the same budget (the paper's Table 7). Policy-file key of each split's entries:
BUDGET_SPLIT_KEYS = {"optimal": "total_budget_split", "equal": "total_budget_split_equal"}


# ----------------------------------------------------------------------------------------------- losses
def validate_losses(L):
  """Checks per-step losses.

  Args:
    L: [D] per-step losses in bits per variable.

  Returns:
    L as float64 [D].

  Raises:
    ValueError: unless L is a non-empty, finite, non-negative 1-D array.
  """
  L = np.asarray(L, dtype=np.float64)
  if L.ndim != 1:
    raise ValueError(f"losses must be a 1-D array of per-step losses, got shape {L.shape}; pass one stage's L_t")
  if L.size == 0:
    raise ValueError("losses are empty; pass one loss per step (D >= 1)")
  for bad, name in ((np.isnan(L), "NaN"), (np.isinf(L), "Inf")):
    if bad.any():
      raise ValueError(
        f"losses contain {name} at steps {np.flatnonzero(bad)[:5].tolist()}; "
        "re-estimate L_t (a diverged model or an empty stratum gives these)"
      )
  if (L < 0).any():
    t = int(np.argmin(L))
    raise ValueError(
      f"losses must be non-negative bits per variable, step {t} has {L[t]!r}; "
      "pass negative log-likelihoods, not log-probabilities"
    )
  return L


def monotone_losses(L, method="sort"):
  """Makes per-step losses non-increasing in t, which the fast DP needs.

  Args:
    L: [D] per-step losses in bits per variable.
    method: 'sort' (descending, as in the paper) or 'isotonic' (the least-squares non-increasing fit, by
      pool-adjacent-violators).

  Returns:
    float64 [D], non-increasing and non-negative.

  Raises:
    ValueError: for invalid losses or an unknown method.
  """
  L = validate_losses(L)
  if method == "sort":
    return np.sort(L)[::-1].copy()
  if method == "isotonic":
    # scipy >= 1.12; pool-adjacent-violators in C. Imported here: scipy.optimize takes 0.4-0.7 s to import, and
    # every job imports this module, while only the isotonic fit uses it.
    from scipy.optimize import isotonic_regression  # noqa: PLC0415

    # Block means of non-negative values stay non-negative, so the fit is a valid loss curve.
    return np.asarray(isotonic_regression(L, increasing=False).x, dtype=np.float64)
  raise ValueError(f"unknown monotone method {method!r}; use one of {MONOTONE_METHODS} or None")


def prepare_losses(L, monotone):
  """The losses the DP optimises.

  Args:
    L: [D] per-step losses.
    monotone: a `MONOTONE_METHODS` name, or None to keep L as given.

  Returns:
    (float64 [D] losses, whether they are non-increasing).
  """
  if monotone is None:
    L = validate_losses(L)
    return L, bool(np.all(np.diff(L) <= 0))
  return monotone_losses(L, monotone), True


def check_budgets(budgets, D):
  """Checks budgets against D.

  Args:
    budgets: one budget (an int) or a list of ints.
    D: the number of variables, the largest allowed budget.

  Returns:
    The budgets as a sorted list of ints without repeats.

  Raises:
    ValueError: if none is given, or one is not an integer in 1..D.
  """
  budgets = [budgets] if np.ndim(budgets) == 0 else list(budgets)
  if not budgets:
    raise ValueError("no budgets given; pass at least one budget between 1 and D")
  for b in budgets:
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
      raise ValueError(f"budget {b!r} is not an integer; pass budgets between 1 and D={D}")
    if not 1 <= b <= D:
      raise ValueError(f"budget {b} is outside 1..D={D}; pass budgets between 1 and D")
  return sorted({int(b) for b in budgets})


# ----------------------------------------------------------------------------------------------- policies
def naive_policy(num_steps, budget):
  """The evenly spaced policy, the paper's baseline.

  Args:
    num_steps: D.
    budget: B in 1..D.

  Returns:
    int64 [B], s_k = floor(k * D / B) (strictly increasing because D / B >= 1).
  """
  (budget,) = check_budgets(budget, num_steps)
  return (np.arange(budget, dtype=np.int64) * num_steps) // budget


def check_policy_steps(steps, D):
  """Checks one stage's policy (every module that takes policies calls this).

  Args:
    steps: [B] step starts.
    D: the number of steps.

  Returns:
    steps as int64 [B].

  Raises:
    ValueError: in one line, unless steps is a non-empty 1-D integer array that starts at 0, strictly increases
      and stays below D.
  """
  steps = np.asarray(steps)
  if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
    raise ValueError(f"a policy must be a non-empty 1-D integer array, got {steps!r}")
  if steps[0] != 0 or np.any(np.diff(steps) <= 0) or steps[-1] >= D:
    raise ValueError(f"policy {steps.tolist()} must start at 0, strictly increase and stay below D={D}")
  return steps.astype(np.int64)


def check_global_policy(steps, num_steps, num_stages=1):
  """`check_policy_steps` for the global policy of an S-stage (upscale) model.

  Args:
    steps: [P] global steps s * D + t.
    num_steps: D.
    num_stages: S.

  Returns:
    steps as int64 [P].

  Raises:
    ValueError: unless they start at 0, strictly increase below S * D and contain every stage start s * D.
  """
  if num_stages == 1:
    return check_policy_steps(steps, num_steps)
  a = np.asarray(steps)
  if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
    raise ValueError(f"a policy must be a non-empty 1-D integer array of global steps, got {steps!r}")
  a, total = a.astype(np.int64), num_stages * num_steps
  where = f"a policy for {num_stages} stages of D={num_steps} steps"
  if a[0] != 0 or np.any(np.diff(a) <= 0) or a[-1] >= total:
    raise ValueError(
      f"{where} must start at 0 and strictly increase below S*D={total}, got "
      f"{a[:8].tolist()}{' ...' if a.size > 8 else ''}"
    )
  missing = np.setdiff1d(np.arange(0, total, num_steps), a)
  if missing.size:
    raise ValueError(
      f"{where} must start every stage (contain every stage start s*D); missing "
      f"{missing[:5].tolist()}; build it with upscale.flatten_policies"
    )
  return a


def policy_cost(L, steps):
  """The expected cost of a policy, sum_k L[s_k] * (s_{k+1} - s_k).

  Args:
    L: [D] per-step losses in bits per variable.
    steps: [B] a valid policy for D steps.

  Returns:
    Expected bits of one item (divide by num_dims for bits/dim).
  """
  L = validate_losses(L)
  steps = check_policy_steps(steps, L.size)
  return float(np.sum(L[steps] * np.diff(np.append(steps, L.size))))


def _monotone_layer(L, F_prev, k):
  """One DP layer in O(D log D) for non-increasing L, by divide and conquer on the argmin.

  Why it is exact: write M[j, i] = F_prev(i) + w(i, j) with w(i, j) = L[i] * (j - i). For i < i', j < j',
      w(i, j) + w(i', j') - w(i, j') - w(i', j) = (j' - j) * (L[i'] - L[i]) <= 0     (L non-increasing),
  so w is Monge (the quadrangle inequality for minimisation), and adding F_prev(i), a function of the column only,
  keeps it so. Then the leftmost argmin opt(j) is non-decreasing in j: if opt(j) = c > a = opt(j') for j < j',
  then M[j, a] > M[j, c] and Monge gives M[j', c] <= M[j', a] + M[j, c] - M[j, a] < M[j', a], a contradiction.
  The feasible columns [k-1, j-1] only grow with j, so the argument holds with the constraint i < j.
  The recursion solves the middle row of every open subproblem of one level in a single vectorised pass (each
  level touches O(D) cells), and each row's columns are limited to [opt of the row block's left bound, opt of its
  right bound]. With float ties the picked argmin is within rounding of the true minimum, and Monge bounds the loss
  of the narrowed ranges by that same rounding, so results match the plain DP to ~1e-12 relative.
  """
  D = L.size
  F = np.full(D + 1, np.inf)
  opt = np.zeros(D + 1, np.int64)
  row_lo, row_hi = np.array([k]), np.array([D])  # open subproblems: rows (steps covered) ...
  col_lo, col_hi = np.array([k - 1]), np.array([D - 1])  # ... and their candidate last-segment starts
  while row_lo.size:
    mid = (row_lo + row_hi) >> 1
    lens = np.minimum(col_hi, mid - 1) - col_lo + 1  # >= 1: col_lo <= opt of a row < mid, or k-1 < mid
    ends = np.cumsum(lens)
    starts = ends - lens
    i = np.arange(ends[-1]) - np.repeat(starts - col_lo, lens)  # concatenated column ranges
    vals = F_prev[i] + L[i] * (np.repeat(mid, lens) - i)
    best = np.minimum.reduceat(vals, starts)
    # Leftmost argmin per segment: the smallest column whose value equals the segment minimum.
    arg = np.minimum.reduceat(np.where(vals == np.repeat(best, lens), i, D), starts)
    F[mid], opt[mid] = best, arg
    left, right = row_lo < mid, mid < row_hi
    row_lo = np.concatenate([row_lo[left], mid[right] + 1])
    row_hi = np.concatenate([mid[left] - 1, row_hi[right]])
    col_lo = np.concatenate([col_lo[left], arg[right]])
    col_hi = np.concatenate([arg[left], col_hi[right]])
  return F, opt


def _dense_layer(L, F_prev, k, max_cells=1 << 22):
  """One DP layer by brute force over all (j, i) pairs: O(D^2), exact for any L. Rows in chunks bound memory."""
  D = L.size
  F = np.full(D + 1, np.inf)
  opt = np.zeros(D + 1, np.int64)
  rows = np.arange(k, D + 1)
  for j in np.array_split(rows, 1 + rows.size * (D - k + 1) // max_cells):
    i = np.arange(k - 1, j[-1])  # the triangle i < j is masked below
    vals = F_prev[None, i] + L[None, i] * (j[:, None] - i[None, :])
    vals = np.where(i[None, :] < j[:, None], vals, np.inf)
    arg = np.argmin(vals, axis=1)
    F[j], opt[j] = vals[np.arange(j.size), arg], i[arg]
  return F, opt


def _run_layers(L, max_budget, layer):
  """Returns costs[b-1] = F_b(D) for b = 1..max_budget and the argmin table opt[b, j] for backtracking."""
  D = L.size
  opt = np.zeros((max_budget + 1, D + 1), np.int16 if D < 2**15 else np.int32)
  F = L[0] * np.arange(D + 1, dtype=np.float64)  # one segment [0, j) starting at 0
  F[0] = np.inf  # segments are never empty
  costs = [F[D]]
  for k in range(2, max_budget + 1):
    F, opt[k] = layer(L, F, k)
    costs.append(F[D])
  return np.array(costs), opt


def _backtrack(opt, budget, D):
  steps, j = [0] * budget, D
  for k in range(budget, 1, -1):
    j = int(opt[k, j])
    steps[k - 1] = j
  return np.array(steps, dtype=np.int64)


def optimal_costs(L, max_budget, monotone="sort"):
  """Optimal expected bits for every budget 1..max_budget, from one DP pass.

  Args:
    L: [D] per-step losses in bits per variable.
    max_budget: the largest budget, in 1..D.
    monotone: see `optimal_policies`.

  Returns:
    float64 [max_budget], non-increasing; entry B-1 is the cost of the cheapest policy with at most B steps.
  """
  L, is_monotone = prepare_losses(L, monotone)
  (max_budget,) = check_budgets(max_budget, L.size)
  costs = _run_layers(L, max_budget, _monotone_layer if is_monotone else _dense_layer)[0]
  return costs[_steps_used(costs, is_monotone) - 1]


def _steps_used(costs, is_monotone):
  """For each budget B (entry B-1), the number of steps b <= B with the cheapest exact-b cost, the largest such b
  on ties. Non-increasing L needs no search (splitting a segment never costs more): b = B, also where rounding
  leaves F_B(D) a last bit above F_{B-1}(D)."""
  if is_monotone:
    return np.arange(1, costs.size + 1)
  used = np.empty(costs.size, np.int64)
  best = 0
  for b in range(costs.size):
    if costs[b] <= costs[best]:
      best = b
    used[b] = best + 1
  return used


def optimal_policies(L, budgets, monotone="sort"):
  """The exact cheapest policy with at most B steps for each budget B (exactly B for non-increasing L).

  Args:
    L: [D] per-step losses in bits per variable.
    budgets: an int or a list of ints in 1..D.
    monotone: 'sort' or 'isotonic' first makes L non-increasing (costs are then under that L) and uses the
      O(B * D log D) algorithm; None keeps L as given and, unless it happens to be non-increasing, falls back to
      the plain O(B * D^2) DP, because the fast algorithm's exactness rests on monotone L.

  Returns:
    {B: (steps int64 [b], expected bits of one item)}, b <= B the steps used (b = B for non-increasing L).
  """
  L, is_monotone = prepare_losses(L, monotone)
  budgets = check_budgets(budgets, L.size)
  costs, opt = _run_layers(L, budgets[-1], _monotone_layer if is_monotone else _dense_layer)
  used = _steps_used(costs, is_monotone)
  return {b: (_backtrack(opt, used[b - 1], L.size), float(costs[used[b - 1] - 1])) for b in budgets}


def plain_dp(L, budget):
  """The reference O(B * D^2) DP on L as given (no monotone transform).

  Args:
    L: [D] per-step losses in bits per variable.
    budget: B in 1..D.

  Returns:
    (steps int64 [B], expected bits of one item).
  """
  L = validate_losses(L)
  (budget,) = check_budgets(budget, L.size)
  costs, opt = _run_layers(L, budget, _dense_layer)
  return _backtrack(opt, budget, L.size), float(costs[-1])


def split_budget_across_stages(stage_losses, total_budget, monotone="sort"):
  """The per-stage budgets that minimise the summed optimal cost of an upscale model; exact.

  Each stage's optimal cost-vs-budget curve comes from one DP pass; a small DP over stages then picks the split.

  Args:
    stage_losses: S arrays of per-step losses, coarse to fine.
    total_budget: network calls in all, between S and the total number of steps.
    monotone: see `optimal_policies`.

  Returns:
    S ints, each >= 1, summing to total_budget.

  Raises:
    ValueError: if no stage is given or the total is out of range.
  """
  losses = [prepare_losses(L, monotone)[0] for L in stage_losses]
  if not losses:
    raise ValueError("no stages given; pass one loss array per stage")
  S, D_sum = len(losses), sum(L.size for L in losses)
  if not isinstance(total_budget, (int, np.integer)) or not S <= total_budget <= D_sum:
    raise ValueError(
      f"total budget {total_budget!r} is outside {S}..{D_sum} (one step per stage up to all "
      "steps); pass a total budget in that range"
    )
  best = np.full(total_budget + 1, np.inf)  # best[t]: cheapest cover of the stages so far with t steps in all
  best[0] = 0.0
  choices = []
  for L in losses:
    curve = optimal_costs(L, min(L.size, total_budget - S + 1), monotone=None)  # L is already prepared
    new, choice = np.full_like(best, np.inf), np.zeros(best.size, np.int64)
    for b, cost in enumerate(curve, start=1):  # small: at most total_budget iterations of O(total) work
      cand = np.append(np.full(b, np.inf), best[:-b] + cost)
      better = cand < new
      new[better], choice[better] = cand[better], b
    best = new
    choices.append(choice)
  split, t = [], total_budget
  for choice in reversed(choices):
    split.append(int(choice[t]))
    t -= split[-1]
  return split[::-1]


def naive_global_policy(num_stages, num_steps, total_budget):
  """The paper's baseline global policy for S stages.

  Args:
    num_stages: S.
    num_steps: D.
    total_budget: network calls in all, in S..S * D.

  Returns:
    int64 [total_budget] global steps: the total split equally (remainder to the first stages), evenly spaced
    steps within each stage.

  Raises:
    ValueError: if the total is out of range.
  """
  if not num_stages <= total_budget <= num_stages * num_steps:
    raise ValueError(
      f"total budget {total_budget} must be between the {num_stages} stage(s) and "
      f"S * D = {num_stages * num_steps} steps"
    )
  return flatten_stage_policies([naive_policy(num_steps, b) for b in equal_split(total_budget, num_stages)], num_steps)


def equal_split(total_budget, num_stages):
  """The paper's split of a total budget over S stages: equal, the remainder to the first stages.

  Returns:
    S ints summing to total_budget.
  """
  return [total_budget // num_stages + (s < total_budget % num_stages) for s in range(num_stages)]


def flatten_stage_policies(stage_steps, num_steps):
  """Joins per-stage step lists (each within 0..D-1) into one array of global steps; no checks.

  Args:
    stage_steps: S step lists.
    num_steps: D.

  Returns:
    int64 [sum of lengths], stage s's steps shifted by s * D.
  """
  return np.concatenate([np.asarray(st, np.int64) + s * num_steps for s, st in enumerate(stage_steps)])
