"""Which global policy and order a file is coded with: the encoder's choice, the decoder's recovery, the search.

A container stores only a policy's budget and hash and an order seed. The encoder picks the policy (one call per
variable, the naive one, or the DP policy of the model's policy file) and optionally searches for the order seed
with the best likelihood on training items; the decoder finds the same policy again among those its model can
make, by hash.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import data, sample, sharding, upscale
from ardm_jax import policy as policy_lib
from ardm_jax.coding.container import Container, ContainerError, policy_hash
from ardm_jax.coding.orders import stage_orders
from ardm_jax.coding_model import CodingModel
from ardm_jax.policy_file import global_policy, load_policy_file

SEARCH_DATA_SEED = 20220201  # training items for the order search: a fixed draw, independent of training seeds


def encoder_policy(
  cm: CodingModel, budget: int | None, naive: bool = False, policy_file: str | None = None, split: str = "optimal"
) -> tuple[np.ndarray, str]:
  """The global policy the encoder codes with.

  Args:
    cm: the coding model.
    budget: the total network calls; None or S * D for one call per variable (and stage).
    naive: use the naive policy (equal split over the stages, evenly spaced steps) instead of the DP policy.
    policy_file: the policy file (default: the workdir's policy.json).
    split: how the DP total is divided over the stages: 'optimal' or 'equal'.

  Returns:
    (global steps int64 [P], a label for the report).

  Raises:
    ValueError: no policy of that budget can be made.
  """

  S, D = cm.num_stages, cm.spec.num_steps
  if budget is None or budget == S * D:
    return upscale.sequential_policy(S, D).astype(np.int64), "one call per variable" + (
      f" in each of {S} stages" if S > 1 else ""
    )
  steps = np.asarray(sample.choose_policy(cm.model, budget, naive, policy_file, split=split), np.int64)
  policy_hash(steps, D, S)  # a malformed policy fails here, before any network call
  if len(steps) != budget:
    raise ValueError(
      f"the policy for --budget {budget} has {len(steps)} steps; rebuild the policy file with "
      f"{cm.model.policy_command(budget)}"
    )
  return steps, ("naive" if naive else "DP-optimal" + (", equal split" if S > 1 and split == "equal" else ""))


def decoder_policy(cm: CodingModel, container: Container, policy_file: str | None = None) -> np.ndarray:
  """Finds the global policy a container was coded with among those this model can make, by its hash.

  Args:
    cm: the coding model.
    container: the parsed file.
    policy_file: the policy file used for compression (default: the workdir's policy.json).

  Returns:
    The global steps, int64 [P]: one call per step (budget S * D), the naive policy, or the policy file's (either
    budget split).

  Raises:
    ContainerError: none of them has the stored hash.
  """

  S, D, budget = container.num_stages, container.D, container.budget
  path = policy_file or os.path.join(cm.workdir, "policy.json")
  candidates = []
  if budget == S * D:
    candidates.append(upscale.sequential_policy(S, D))
  else:
    if budget >= S:
      candidates.append(policy_lib.naive_global_policy(S, D, budget))
    if os.path.isfile(path):
      pf = load_policy_file(path)  # a malformed file is reported as such
      for split in policy_lib.BUDGET_SPLIT_KEYS:
        try:
          candidates.append(global_policy(pf, budget, split))
        except ValueError:
          pass  # no policy for this budget and split in the file
  for steps in candidates:
    try:
      if policy_hash(steps, D, S) == container.policy_hash:
        return np.asarray(steps, np.int64)
    except ValueError:
      continue  # a policy file of another model's stage layout
  if budget == S * D:
    raise ContainerError(
      f"policy mismatch: a budget-{budget} policy can only be one call per variable, but "
      "the stored policy hash differs; the file is corrupt"
    )
  raise ContainerError(
    f"policy mismatch: the file was coded with a budget-{budget} policy (hash "
    f"{container.policy_hash.hex()}) that is neither the naive one nor the DP policy in "
    f"{path}; decode with the policy file used for compression (--policy FILE)"
  )


def search_order(
  cm: CodingModel, steps: np.ndarray, num_orders: int, num_items: int = 64, base_seed: int = 0
) -> tuple[int, list[float]]:
  """Tries the orders of seeds base_seed .. base_seed + num_orders - 1 on training items; returns the best.

  Each order (all stages' orders, `orders.stage_orders`) is scored by the exact policy log-likelihood (one
  network call per policy step) of `num_items` training items (a fixed draw, SEARCH_DATA_SEED), in bits/dim; the
  seed with the lowest mean wins (the paper tries 5 orders).

  Args:
    cm: the coding model.
    steps: the global policy, int [P].
    num_orders: how many seeds to try, >= 1.
    num_items: training items to score them on, >= 1.
    base_seed: the first seed.

  Returns:
    (the best seed, the bits/dim of every seed tried).
  """

  if num_orders < 1 or num_items < 1:
    raise ValueError(f"--search-orders and --search-items must be >= 1, got {num_orders} and {num_items}")
  spec, model, objective = cm.spec, cm.model, cm.objective
  items = data.load(model.config.data).train_batch(0, num_items, SEARCH_DATA_SEED)
  S, D = objective.num_stages, spec.num_steps
  B = min(num_items, cm.predictor.max_batch)
  apply_fn = model.setup.apply_fn
  fn = jax.jit(
    lambda params, x, sigma_BxSxD, policy_P: upscale.policy_log_likelihood(
      apply_fn, params, x, sigma_BxSxD, policy_P, spec=objective
    )
  )
  policy_P = jnp.asarray(steps, jnp.int32)
  scores = []
  for seed in range(base_seed, base_seed + num_orders):
    sigma_BxSxD = np.broadcast_to(stage_orders(seed, D, S), (B, S, D))
    nats = 0.0
    for lo in range(0, num_items, B):
      x = items[lo : lo + B]
      n = len(x)
      with model.setup.context():
        ll_B = sharding.to_host(
          fn(
            model.params,
            sharding.place_rows(sharding.pad_rows(x, B), model.setup.mesh),
            sharding.place_rows(sigma_BxSxD, model.setup.mesh),
            policy_P,
          )
        )
      nats -= float(np.sum(ll_B[:n], dtype=np.float64))
    scores.append(nats / (num_items * D * np.log(2.0)))
  return base_seed + int(np.argmin(scores)), scores
