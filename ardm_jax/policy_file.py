"""Policy files: the JSON that `ardm policy` writes and every job reads, and its loss-file inputs.

A policy file stores, per stage, the estimated per-step losses L_t (with standard errors), and for each budget the
DP-optimal steps with their expected bits/dim and that of the evenly spaced policy; for an upscale model also each
total budget's split over the stages. It is kept apart from the DP (`policy`) because it changes with the file
format (versioned by `SCHEMA_VERSION`), not with the algorithm. NumPy and JSON only; the plot is
`policy_plot`.
"""

import json
import os

import numpy as np

from ardm_jax import policy as policy_lib
from ardm_jax.policy import BUDGET_SPLIT_KEYS, MONOTONE_METHODS

SCHEMA_VERSION = 1


def build_policy_file(
  stage_losses, budgets, num_dims, *, stage_stderrs=None, monotone="sort", fingerprint=None, total_budgets=()
):
  """Builds a policy file for one stage (OA-ARDM) or several (upscale ARDM, coarse to fine).

  A stage's expected_bpd is its contribution (its cost / num_dims); a model's total sums over stages. Both the DP
  and the naive policy are scored under the monotone losses the DP optimised; loss_per_step stays the raw estimate.

  Args:
    stage_losses: S arrays [D] of per-step losses in bits per variable.
    budgets: per-stage budgets to solve for in every stage.
    num_dims: data dimensions per item (bits/dim = bits / num_dims).
    stage_stderrs: S arrays [D] of standard errors of the losses, or None.
    monotone: see `policy.optimal_policies`.
    fingerprint: a JSON object identifying the model the losses came from, or None.
    total_budgets: totals to split over the stages; each adds its optimal split (`total_budget_split`) and its
      equal split (`total_budget_split_equal`, the paper's Table 7), with the per-stage policies they need.

  Returns:
    The policy file as a dict of plain JSON types, validated.

  Raises:
    ValueError: for invalid losses, budgets or stderrs.
  """
  stage_losses = [policy_lib.validate_losses(L) for L in stage_losses]
  stage_stderrs = stage_stderrs if stage_stderrs is not None else [None] * len(stage_losses)
  if len(stage_stderrs) != len(stage_losses):
    raise ValueError(f"got {len(stage_stderrs)} stderr arrays for {len(stage_losses)} stages; pass one per stage")
  splits = {
    "optimal": {int(T): policy_lib.split_budget_across_stages(stage_losses, int(T), monotone) for T in total_budgets},
    "equal": {int(T): policy_lib.equal_split(int(T), len(stage_losses)) for T in total_budgets},
  }
  stages = []
  for s, (L, err) in enumerate(zip(stage_losses, stage_stderrs)):
    stage_budgets = [bs[s] for split in splits.values() for bs in split.values()]
    wanted = policy_lib.check_budgets(list(budgets) + stage_budgets, L.size)
    L_mono = policy_lib.prepare_losses(L, monotone)[0]
    policies = {}
    for b, (steps, cost) in policy_lib.optimal_policies(L, wanted, monotone).items():
      policies[str(b)] = {
        "steps": steps.tolist(),
        "expected_bpd": cost / num_dims,
        "naive_expected_bpd": policy_lib.policy_cost(L_mono, policy_lib.naive_policy(L.size, b)) / num_dims,
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
  monotone_L = [policy_lib.prepare_losses(L, monotone)[0] for L in stage_losses]
  for name, split in splits.items():
    pf[BUDGET_SPLIT_KEYS[name]] = {
      str(T): {
        "stage_budgets": bs,
        "expected_bpd": sum(stages[s]["policies"][str(b)]["expected_bpd"] for s, b in enumerate(bs)),
        # the paper's baseline: the total split equally, evenly spaced steps in each stage
        "naive_expected_bpd": sum(
          policy_lib.policy_cost(L, policy_lib.naive_policy(L.size, b))
          for L, b in zip(monotone_L, policy_lib.equal_split(T, len(stage_losses)))
        )
        / num_dims,
      }
      for T, bs in split.items()
    } or None
  _validate_policy_file(pf, "the new policy file")
  return pf


def _validate_policy_file(pf, where):
  """Raises a ValueError naming `where` and the fix unless pf is a well-formed policy file of this schema."""

  def need(ok, problem):
    if not ok:
      raise ValueError(f"{where}: {problem}; regenerate it with ardm_jax.policy_file.build_policy_file")

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
      need(
        len(policy_lib.check_policy_steps(p["steps"], D)) == int(key),
        f"stage {s} policy {key} has {len(p['steps'])} steps",
      )
  for split, field in BUDGET_SPLIT_KEYS.items():  # the equal split is absent from files of earlier versions
    tot = pf.get(field)
    need(tot is None or isinstance(tot, dict), f"{field} must be an object or null")
    for key, entry in (tot or {}).items():
      bs = entry.get("stage_budgets") if isinstance(entry, dict) else None
      need(isinstance(bs, list) and len(bs) == len(pf["stages"]) and sum(bs) == int(key), f"{field} entry {key!r}")
      need(split != "equal" or bs == policy_lib.equal_split(int(key), len(bs)), f"{field} {key} is not an equal split")
      for s, b in enumerate(bs):
        need(str(b) in pf["stages"][s]["policies"], f"{field} {key} needs stage {s} budget {b}")


def save_policy_file(path, policy_file, *, overwrite=False):
  """Writes a policy file as compact JSON after validating it.

  Args:
    path: the file to write.
    policy_file: the dict from `build_policy_file`.
    overwrite: replace an existing file.

  Raises:
    ValueError: if the policy file is malformed.
    FileExistsError: if path exists and overwrite is False.
  """
  _validate_policy_file(policy_file, "policy file to save")
  try:
    with open(path, "w" if overwrite else "x", encoding="utf-8") as f:
      # Compact: the C encoder (indent falls back to pure Python: seconds for hundreds of budgets at D ~ 3k).
      json.dump(policy_file, f, separators=(",", ":"))
  except FileExistsError:
    raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) or choose another path") from None


def load_policy_file(path):
  """Reads and validates a policy file.

  Args:
    path: a JSON file written by `save_policy_file`.

  Returns:
    The policy file dict.

  Raises:
    ValueError: if the file is malformed or of another schema version.
  """
  with open(path, encoding="utf-8") as f:
    pf = json.load(f)
  _validate_policy_file(pf, f"policy file {path}")
  return pf


def policy_for_budget(policy_file, budget, stage=0):
  """The stored policy of one stage with a given budget.

  Args:
    policy_file: a policy file dict.
    budget: B.
    stage: the stage index.

  Returns:
    int64 [B] steps.

  Raises:
    ValueError: if the stage or the budget is not in the file.
  """
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
  """Returns split if it is a `BUDGET_SPLIT_KEYS` name ('optimal' or 'equal'), else raises a ValueError."""
  if split not in BUDGET_SPLIT_KEYS:
    raise ValueError(f"unknown budget split {split!r}; use --budget-split optimal or --budget-split equal")
  return split


def total_budget_entries(policy_file, split="optimal"):
  """The total-budget entries of a policy file.

  Args:
    policy_file: a policy file dict.
    split: 'optimal' or 'equal'.

  Returns:
    {str(total): {"stage_budgets", "expected_bpd", "naive_expected_bpd"}}, {} when the file has none.
  """
  return policy_file.get(BUDGET_SPLIT_KEYS[check_budget_split(split)]) or {}


def global_policy(policy_file, total_budget, split="optimal"):
  """The global policy over all stages for a total budget.

  One stage: the stored policy with that budget (`split` makes no difference). Several (upscale ARDM): the file's
  `split` of the total over the stages, each stage's policy shifted by s * D; every stage start s * D is included.

  Args:
    policy_file: a policy file dict.
    total_budget: network calls in all.
    split: 'optimal' or 'equal'.

  Returns:
    int64 [total_budget], increasing global steps s * D + t.

  Raises:
    ValueError: if the file has no policy (or split) for this total.
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
  return policy_lib.flatten_stage_policies(
    [policy_for_budget(policy_file, b, s) for s, b in enumerate(entry["stage_budgets"])], stages[0]["num_steps"]
  )


def load_loss_file(path, stage=0):
  """Reads per-step losses to build a policy from.

  Args:
    path: a .npy file (1-D) or a .json file holding a list, an object with "loss_per_step" (and optionally
      "loss_stderr"), or a policy file.
    stage: the stage to read from a policy file.

  Returns:
    (L float64 [D], stderr float64 [D] or None).

  Raises:
    ValueError: for another file type or content, or invalid losses.
  """
  ext = os.path.splitext(str(path))[1].lower()
  if ext == ".npy":
    return policy_lib.validate_losses(np.load(path)), None
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
    return policy_lib.validate_losses(data), None
  if isinstance(data, dict) and "loss_per_step" in data:
    err = data.get("loss_stderr")
    return policy_lib.validate_losses(data["loss_per_step"]), None if err is None else np.asarray(err, np.float64)
  raise ValueError(
    f"{path} holds neither a list of losses nor an object with 'loss_per_step' "
    f"(found {type(data).__name__}{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''})"
  )
