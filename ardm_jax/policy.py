"""Parallel generation policies for (upscale) OA-ARDMs: per-step losses -> optimal step schedules.

NumPy only. A policy for D steps is an increasing int array [0 = s_0 < ... < s_{B-1}] < D; call k generates the
variables with sigma in [s_k, s_{k+1}) (s_B := D), so its expected cost in bits per data item is
C = sum_k L[s_k] * (s_{k+1} - s_k) for per-step losses L in bits per variable. Expected bits/dim = C / num_dims.

Finding the cheapest policy with exactly B steps is a shortest path with B edges. Layer k of the dynamic programme,
    F_k(j) = min_{k-1 <= i < j} F_{k-1}(i) + L[i] * (j - i),     F_1(j) = L[0] * j,
is the cheapest cover of steps [0, j) by k segments starting at 0; the answer for budget B is F_B(D), and one pass up
to the largest budget serves every smaller budget.
"""

import json
import os

import numpy as np

SCHEMA_VERSION = 1
MONOTONE_METHODS = ("sort", "isotonic")
# How a total budget is divided over the stages of an upscale model: 'optimal' minimises the summed DP cost,
# 'equal' gives every stage the same budget (the paper's Table 7). Policy-file key of each split's entries:
BUDGET_SPLIT_KEYS = {"optimal": "total_budget_split", "equal": "total_budget_split_equal"}


# ----------------------------------------------------------------------------------------------- losses
def validate_losses(L):
  """Returns L as float64 after checking it is a non-empty, finite, non-negative 1-D array."""
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
  """Makes L non-increasing in t: 'sort' (descending, as in the paper) or 'isotonic' (least-squares PAV fit)."""
  L = validate_losses(L)
  if method == "sort":
    return np.sort(L)[::-1].copy()
  if method == "isotonic":
    from scipy.optimize import isotonic_regression  # scipy >= 1.12; pool-adjacent-violators in C

    # Block means of non-negative values stay non-negative, so the fit is a valid loss curve.
    return np.asarray(isotonic_regression(L, increasing=False).x, dtype=np.float64)
  raise ValueError(f"unknown monotone method {method!r}; use one of {MONOTONE_METHODS} or None")


def _prepare(L, monotone):
  """Returns (losses the DP optimises, whether they are non-increasing)."""
  if monotone is None:
    L = validate_losses(L)
    return L, bool(np.all(np.diff(L) <= 0))
  return monotone_losses(L, monotone), True


def _check_budgets(budgets, D):
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
  """Evenly spaced policy: s_k = floor(k * D / B); strictly increasing because D / B >= 1."""
  (budget,) = _check_budgets(budget, num_steps)
  return (np.arange(budget, dtype=np.int64) * num_steps) // budget


def check_policy_steps(steps, D):
  """Returns a valid policy as int64, or raises a one-line error (used by every module that takes policies)."""
  steps = np.asarray(steps)
  if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
    raise ValueError(f"a policy must be a non-empty 1-D integer array, got {steps!r}")
  if steps[0] != 0 or np.any(np.diff(steps) <= 0) or steps[-1] >= D:
    raise ValueError(f"policy {steps.tolist()} must start at 0, strictly increase and stay below D={D}")
  return steps.astype(np.int64)


def check_global_policy(steps, num_steps, num_stages=1):
  """check_policy_steps for the global policy of an S-stage (upscale) model: global steps s * D + t that start at
  0, strictly increase below S * D and contain every stage start s * D. Returns int64."""
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
  """Expected bits of one item under policy `steps` (divide by num_dims for bits/dim)."""
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
  """Optimal expected bits for every budget 1..max_budget (np.ndarray [max_budget]), one DP pass."""
  L, is_monotone = _prepare(L, monotone)
  (max_budget,) = _check_budgets(max_budget, L.size)
  return _run_layers(L, max_budget, _monotone_layer if is_monotone else _dense_layer)[0]


def optimal_policies(L, budgets, monotone="sort"):
  """Exact cheapest policy with exactly B steps for each budget: {B: (steps int64 [B], cost in bits)}.

  monotone='sort'|'isotonic' first makes L non-increasing (costs are then under that L) and uses the
  O(B * D log D) algorithm; monotone=None keeps L as given and, unless it happens to be non-increasing, falls back
  to the plain O(B * D^2) DP, because the fast algorithm's exactness rests on monotone L.
  """
  L, is_monotone = _prepare(L, monotone)
  budgets = _check_budgets(budgets, L.size)
  costs, opt = _run_layers(L, budgets[-1], _monotone_layer if is_monotone else _dense_layer)
  return {b: (_backtrack(opt, b, L.size), float(costs[b - 1])) for b in budgets}


def plain_dp(L, budget):
  """Reference O(B * D^2) DP on L as given (no monotone transform): (steps, cost)."""
  L = validate_losses(L)
  (budget,) = _check_budgets(budget, L.size)
  costs, opt = _run_layers(L, budget, _dense_layer)
  return _backtrack(opt, budget, L.size), float(costs[-1])


def split_budget_across_stages(stage_losses, total_budget, monotone="sort"):
  """Per-stage budgets (each >= 1, summing to total_budget) minimising the summed optimal cost; exact.

  Each stage's optimal cost-vs-budget curve comes from one DP pass; a small DP over stages then picks the split.
  """
  losses = [_prepare(L, monotone)[0] for L in stage_losses]
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


# ----------------------------------------------------------------------------------------------- files
def build_policy_file(
  stage_losses, budgets, num_dims, *, stage_stderrs=None, monotone="sort", fingerprint=None, total_budgets=()
):
  """Policy-file dict (plain JSON types) for one stage (OA-ARDM) or several (upscale ARDM, coarse to fine).

  A stage's expected_bpd is its contribution (its cost / num_dims); a model's total sums over stages. Both the DP
  and the naive policy are scored under the monotone losses the DP optimised; loss_per_step stays the raw estimate.
  `total_budgets` adds, for each total, its optimal split over the stages (`total_budget_split`) and its equal
  split (`total_budget_split_equal`, the paper's Table 7), with those per-stage policies.
  """
  stage_losses = [validate_losses(L) for L in stage_losses]
  stage_stderrs = stage_stderrs if stage_stderrs is not None else [None] * len(stage_losses)
  if len(stage_stderrs) != len(stage_losses):
    raise ValueError(f"got {len(stage_stderrs)} stderr arrays for {len(stage_losses)} stages; pass one per stage")
  splits = {
    "optimal": {int(T): split_budget_across_stages(stage_losses, int(T), monotone) for T in total_budgets},
    "equal": {int(T): equal_split(int(T), len(stage_losses)) for T in total_budgets},
  }
  stages = []
  for s, (L, err) in enumerate(zip(stage_losses, stage_stderrs)):
    stage_budgets = [bs[s] for split in splits.values() for bs in split.values()]
    wanted = _check_budgets(list(budgets) + stage_budgets, L.size)
    L_mono = _prepare(L, monotone)[0]
    policies = {}
    for b, (steps, cost) in optimal_policies(L, wanted, monotone).items():
      policies[str(b)] = {
        "steps": steps.tolist(),
        "expected_bpd": cost / num_dims,
        "naive_expected_bpd": policy_cost(L_mono, naive_policy(L.size, b)) / num_dims,
      }
    stages.append(
      {
        "num_steps": int(L.size),
        "loss_per_step": L.tolist(),
        "loss_stderr": None if err is None else np.asarray(err, np.float64).tolist(),
        "monotone": monotone,
        "policies": policies,
      }
    )
  pf = {"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint, "num_dims": int(num_dims), "stages": stages}
  monotone_L = [_prepare(L, monotone)[0] for L in stage_losses]
  for name, split in splits.items():
    pf[BUDGET_SPLIT_KEYS[name]] = {
      str(T): {
        "stage_budgets": bs,
        "expected_bpd": sum(stages[s]["policies"][str(b)]["expected_bpd"] for s, b in enumerate(bs)),
        # the paper's baseline: the total split equally, evenly spaced steps in each stage
        "naive_expected_bpd": sum(
          policy_cost(L, naive_policy(L.size, b)) for L, b in zip(monotone_L, equal_split(T, len(stage_losses)))
        )
        / num_dims,
      }
      for T, bs in split.items()
    } or None
  _validate_policy_file(pf, "the new policy file")
  return pf


def _validate_policy_file(pf, where):
  def need(ok, problem):
    if not ok:
      raise ValueError(f"{where}: {problem}; regenerate it with ardm_jax.policy.build_policy_file")

  need(isinstance(pf, dict), "is not a JSON object")
  if pf.get("schema_version") != SCHEMA_VERSION:
    raise ValueError(
      f"{where} has schema_version {pf.get('schema_version')!r}, this ardm_jax reads "
      f"schema_version {SCHEMA_VERSION}; use the matching ardm_jax version or regenerate the file"
    )
  need(pf.get("fingerprint") is None or isinstance(pf["fingerprint"], dict), "fingerprint must be an object or null")
  need(isinstance(pf.get("num_dims"), int) and pf["num_dims"] >= 1, "num_dims must be a positive integer")
  need(isinstance(pf.get("stages"), list) and pf["stages"], "stages must be a non-empty list")
  for s, st in enumerate(pf["stages"]):
    need(isinstance(st, dict) and isinstance(st.get("num_steps"), int), f"stage {s} lacks an integer num_steps")
    D = st["num_steps"]
    need(len(st.get("loss_per_step") or []) == D, f"stage {s} loss_per_step must have num_steps={D} entries")
    need(st.get("loss_stderr") is None or len(st["loss_stderr"]) == D, f"stage {s} loss_stderr length != {D}")
    need(st.get("monotone") in MONOTONE_METHODS + (None,), f"stage {s} has unknown monotone {st.get('monotone')!r}")
    need(isinstance(st.get("policies"), dict), f"stage {s} policies must be an object")
    for key, p in st["policies"].items():
      need(
        key.isdigit() and isinstance(p, dict) and {"steps", "expected_bpd", "naive_expected_bpd"} <= set(p),
        f"stage {s} policy {key!r} is malformed",
      )
      need(len(check_policy_steps(p["steps"], D)) == int(key), f"stage {s} policy {key} has {len(p['steps'])} steps")
  for split, field in BUDGET_SPLIT_KEYS.items():  # the equal split is absent from files of earlier versions
    tot = pf.get(field)
    need(tot is None or isinstance(tot, dict), f"{field} must be an object or null")
    for key, entry in (tot or {}).items():
      bs = entry.get("stage_budgets") if isinstance(entry, dict) else None
      need(isinstance(bs, list) and len(bs) == len(pf["stages"]) and sum(bs) == int(key), f"{field} entry {key!r}")
      need(split != "equal" or bs == equal_split(int(key), len(bs)), f"{field} {key} is not an equal split")
      for s, b in enumerate(bs):
        need(str(b) in pf["stages"][s]["policies"], f"{field} {key} needs stage {s} budget {b}")


def save_policy_file(path, policy_file, *, overwrite=False):
  """Writes a validated policy file; refuses to replace an existing file unless overwrite=True."""
  _validate_policy_file(policy_file, "policy file to save")
  try:
    with open(path, "w" if overwrite else "x", encoding="utf-8") as f:
      # Compact: the C encoder (indent falls back to pure Python: seconds for hundreds of budgets at D ~ 3k).
      json.dump(policy_file, f, separators=(",", ":"))
  except FileExistsError:
    raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) or choose another path") from None


def load_policy_file(path):
  with open(path, encoding="utf-8") as f:
    pf = json.load(f)
  _validate_policy_file(pf, f"policy file {path}")
  return pf


def policy_for_budget(policy_file, budget, stage=0):
  """Steps (np.int64) of the stored policy with `budget` steps for `stage`."""
  stages = policy_file["stages"]
  if not 0 <= stage < len(stages):
    raise ValueError(f"stage {stage} is outside 0..{len(stages) - 1}; this policy file has {len(stages)} stage(s)")
  policies = stages[stage]["policies"]
  if str(budget) not in policies:
    have = sorted(int(b) for b in policies)
    raise ValueError(
      f"no policy for budget {budget} in stage {stage}; available budgets: {have}; "
      "rebuild the policy file with this budget"
    )
  return np.asarray(policies[str(budget)]["steps"], dtype=np.int64)


def check_budget_split(split):
  if split not in BUDGET_SPLIT_KEYS:
    raise ValueError(f"unknown budget split {split!r}; use --budget-split optimal or --budget-split equal")
  return split


def total_budget_entries(policy_file, split="optimal"):
  """The policy file's {str(total): entry} for `split` ({} when the file has none)."""
  return policy_file.get(BUDGET_SPLIT_KEYS[check_budget_split(split)]) or {}


def global_policy(policy_file, total_budget, split="optimal"):
  """One increasing array of global steps s * D + t over all stages for a total budget (np.int64).

  One stage: the stored policy with that budget (`split` makes no difference). Several (upscale ARDM): the file's
  `split` of the total over the stages ('optimal' or 'equal'), each stage's policy shifted by s * D; every stage
  start s * D is included.
  """
  stages = policy_file["stages"]
  check_budget_split(split)
  if len(stages) == 1:
    return policy_for_budget(policy_file, total_budget)
  entries = total_budget_entries(policy_file, split)
  entry = entries.get(str(total_budget))
  if entry is None:
    have = sorted(int(b) for b in entries)
    raise ValueError(
      f"no split of total budget {total_budget} over the {len(stages)} stages in this policy file "
      f"(available totals: {have}); rebuild it with `ardm policy --budgets {total_budget}`"
    )
  return flatten_stage_policies(
    [policy_for_budget(policy_file, b, s) for s, b in enumerate(entry["stage_budgets"])], stages[0]["num_steps"]
  )


def naive_global_policy(num_stages, num_steps, total_budget):
  """The paper's baseline for S stages: the total split equally (remainder to the first stages), evenly spaced
  steps within each stage."""
  if not num_stages <= total_budget <= num_stages * num_steps:
    raise ValueError(
      f"total budget {total_budget} must be between the {num_stages} stage(s) and "
      f"S * D = {num_stages * num_steps} steps"
    )
  return flatten_stage_policies([naive_policy(num_steps, b) for b in equal_split(total_budget, num_stages)], num_steps)


def equal_split(total_budget, num_stages):
  """The paper's split of a total budget over stages: equal, the remainder to the first stages."""
  return [total_budget // num_stages + (s < total_budget % num_stages) for s in range(num_stages)]


def flatten_stage_policies(stage_steps, num_steps):
  """Per-stage step lists (each within 0..D-1) -> one array of global steps s * D + t (np.int64); no checks."""
  return np.concatenate([np.asarray(st, np.int64) + s * num_steps for s, st in enumerate(stage_steps)])


def load_loss_file(path, stage=0):
  """Per-step losses from .npy (1-D) or .json (a list, {"loss_per_step": ...}, or a policy file) -> (L, stderr)."""
  ext = os.path.splitext(str(path))[1].lower()
  if ext == ".npy":
    return validate_losses(np.load(path)), None
  if ext != ".json":
    raise ValueError(f"cannot read losses from {path}: expected a .npy array or a .json file")
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if isinstance(data, dict) and "schema_version" in data:
    data = load_policy_file(path)
    if not 0 <= stage < len(data["stages"]):
      raise ValueError(f"stage {stage} is outside 0..{len(data['stages']) - 1} in policy file {path}")
    data = data["stages"][stage]
  if isinstance(data, list):
    return validate_losses(data), None
  if isinstance(data, dict) and "loss_per_step" in data:
    err = data.get("loss_stderr")
    return validate_losses(data["loss_per_step"]), None if err is None else np.asarray(err, np.float64)
  raise ValueError(
    f"{path} holds neither a list of losses nor an object with 'loss_per_step' "
    f"(found {type(data).__name__}{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''})"
  )


def plot_policy(path_png, L, L_stderr, budgets, dp_bpd, naive_bpd, num_dims):
  """Two panels: L_t with a +-2 stderr band, and predicted bits/dim against budget (log x) for DP and naive."""
  # The object API with the Agg canvas: files only, no display, and half the import time of pyplot.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  L = validate_losses(L)
  t = np.arange(L.size)
  fig = Figure(figsize=(11, 4))
  FigureCanvasAgg(fig)
  ax0, ax1 = fig.subplots(1, 2)
  ax0.plot(t, L, lw=1, label="L_t")
  if L_stderr is not None:
    err = 2 * np.asarray(L_stderr, np.float64)
    ax0.fill_between(t, L - err, L + err, alpha=0.3, label="±2 stderr")
  ax0.set(xlabel="step t (variables known)", ylabel="bits per variable", title="per-step loss")
  ax0.legend()
  ax1.plot(budgets, dp_bpd, "o-", label="optimal (DP)")
  ax1.plot(budgets, naive_bpd, "s--", label="evenly spaced")
  ax1.axhline(L.sum() / num_dims, color="gray", lw=0.8, label=f"all {L.size} steps")
  ax1.set(xscale="log", xlabel="budget (network calls)", ylabel="expected bits/dim", title="budget vs bits/dim")
  ax1.legend()
  fig.subplots_adjust(left=0.06, right=0.99, bottom=0.13, top=0.92, wspace=0.18)  # tight_layout costs ~1 s
  fig.savefig(path_png, dpi=100)
