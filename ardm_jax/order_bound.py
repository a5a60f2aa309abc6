"""Likelihood beyond the ELBO: importance-weighted bounds over orders (`ardm eval --orders K`).

An OA-ARDM defines p(x) = E_sigma[p(x | sigma)] over uniformly random orders sigma. Its ELBO is
E_sigma[log p(x | sigma)]; with K independent orders, log((1/K) sum_k p(x | sigma_k)) is also a lower bound on
log p(x) (the importance-weighted bound with the uniform distribution over orders as the proposal), its
expectation never decreases with K (Burda et al., 2016), K = 1 is the ELBO in expectation, and it reaches log p(x)
as the orders cover every permutation. Each p(x | sigma_k) is exact: all D network calls along sigma_k (or the
calls of a parallel policy, which bounds the policy model's own likelihood).

An upscale ARDM is a product of per-stage OA-ARDMs, p(x) = prod_s E_{sigma_s}[p_s(x^{(s+1)} | x^{(s)}, sigma_s)],
so every stage gets its own K orders and its own log-mean-exp, summed over stages. This is the mean over all K^S
combinations of the stages' orders, an unbiased estimate of p(x) again, so the sum is a valid bound and at least
as tight as averaging K joint draws.

The per-K curve (K = 1, 2, 4, ..., K) uses the first k orders of the same draws, so it is a paired comparison.
Order k of item n is drawn from fold_in(fold_in(PRNGKey(seed), n), k), so the numbers do not depend on the batch
size or the device count. The per-order likelihoods run as one jitted function over batches of (item, order) rows
(`upscale.policy_log_likelihood`, the exact code `ardm eval --budget B --exact` runs).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from ardm_jax import ardm, held_out, sharding, upscale
from ardm_jax import objective as objective_lib


def curve_ks(num_orders: int) -> list[int]:
  """1, 2, 4, ... up to num_orders, and num_orders itself."""
  num_orders = ardm.check_int("--orders", num_orders, 1)
  ks, k = [], 1
  while k < num_orders:
    ks.append(k)
    k *= 2
  return ks + [num_orders]


@functools.partial(jax.jit, static_argnames=("num_stages", "num_steps"))
def _row_orders(key, item_R, order_R, *, num_stages, num_steps):
  def one(n, k):
    row_key = jax.random.fold_in(jax.random.fold_in(key, n), k)
    return upscale.sample_stage_orders(row_key, 1, num_stages, num_steps)[0]

  return jax.vmap(one)(item_R, order_R)


@functools.partial(jax.jit, static_argnames=("apply_fn", "spec"))
def _row_log_likelihoods(params, x_R, sigma_RxSxD, policy_P, *, apply_fn, spec):
  return upscale.policy_log_likelihood(apply_fn, params, x_R, sigma_RxSxD, policy_P, spec=spec, per_stage=True)


def random_orders(
  seed: int, item_index: np.ndarray, order_index: np.ndarray, num_stages: int, num_steps: int
) -> np.ndarray:
  """The orders sigma [R, S, D] (ranks) of rows (item n, order k), as `order_log_likelihoods` draws them."""
  return np.asarray(
    _row_orders(
      jax.random.PRNGKey(seed),
      jnp.asarray(item_index, jnp.uint32),
      jnp.asarray(order_index, jnp.uint32),
      num_stages=num_stages,
      num_steps=num_steps,
    )
  )


def _check_orders(orders, num_stages: int, num_steps: int) -> np.ndarray:
  """Explicit orders as [K, S, D] ranks: [K, D] gives every stage the same order."""
  orders = np.asarray(orders)
  if orders.ndim == 2:
    orders = np.repeat(orders[:, None, :], num_stages, axis=1)
  if orders.ndim != 3 or orders.shape[1:] != (num_stages, num_steps) or len(orders) < 1:
    raise ValueError(f"orders must be [K, D] or [K, S, D] = [K, {num_stages}, {num_steps}] ranks, got {orders.shape}")
  if not np.array_equal(np.sort(orders, axis=-1), np.broadcast_to(np.arange(num_steps), orders.shape)):
    raise ValueError("every order must be a permutation of 0..D-1 (the step at which each variable is generated)")
  return orders.astype(np.int32)


def order_log_likelihoods(
  apply_fn,
  spec,
  params,
  items: np.ndarray,
  *,
  num_orders: int | None = None,
  orders=None,
  policy=None,
  batch_size: int,
  seed: int = 0,
  mesh=None,
  log_every_s: float = 30.0,
) -> np.ndarray:
  """log p(x_n | sigma_{n,k}) in nats per item, order and stage: [N, K, S].

  Either `num_orders` random orders per item (and per stage), or `orders`, K explicit orders ([K, D] or [K, S, D]
  ranks) used for every item. `policy` is a global policy (sample.choose_policy); None runs every step. Rows
  (item, order) go through the network `batch_size` at a time; on a `mesh` every batch is padded to divide the
  devices (sharding.place_rows) and the padding is ignored.
  """
  if objective_lib.is_baseline(spec):
    raise ValueError(
      "the bound over orders needs an ARDM; a baseline has no orders to average (the ARM's NLL is already exact)"
    )
  held_out.check_batch_size(batch_size)
  items = np.asarray(items)
  num_items, num_steps, num_stages = len(items), int(np.prod(items.shape[1:])), spec.num_stages
  if num_items < 1:
    raise ValueError("no items to evaluate")
  if orders is not None:
    if num_orders is not None:
      raise ValueError("pass either num_orders (random orders) or orders (explicit), not both")
    orders = _check_orders(orders, num_stages, num_steps)
    num_orders = len(orders)
  num_orders = ardm.check_int("--orders", num_orders, 1)
  policy = upscale.sequential_policy(num_stages, num_steps) if policy is None else policy
  policy_P = jnp.asarray(upscale.validate_policy(policy, num_steps, num_stages))
  fn = functools.partial(_row_log_likelihoods, apply_fn=apply_fn, spec=spec)
  place = (lambda rows: jnp.asarray(rows)) if mesh is None else (lambda rows: sharding.place_rows(rows, mesh))

  item_R = np.repeat(np.arange(num_items), num_orders)
  order_R = np.tile(np.arange(num_orders), num_items)
  out = np.zeros((item_R.size, num_stages), np.float64)
  num_batches = -(-item_R.size // batch_size)
  start = last_log = time.time()
  for b in range(num_batches):
    rows = slice(b * batch_size, (b + 1) * batch_size)
    n, k = item_R[rows], order_R[rows]
    sigma = orders[k] if orders is not None else random_orders(seed, n, k, num_stages, num_steps)
    values = sharding.to_host(fn(params, place(items[n]), place(sigma), policy_P))
    out[rows] = values[: len(n)]
    if time.time() - last_log > log_every_s and jax.process_index() == 0:
      rate = (b + 1) / (time.time() - start)
      print(
        f"  orders bound: batch {b + 1}/{num_batches} of {batch_size} (item, order) rows x "
        f"{len(policy)} calls ({rate:.3f} batches/s, ETA {(num_batches - b - 1) / rate:.0f}s)",
        flush=True,
      )
      last_log = time.time()
  if not np.all(np.isfinite(out)):
    raise FloatingPointError("a per-order log-likelihood is not finite: the checkpoint's parameters are not finite")
  return out.reshape(num_items, num_orders, num_stages)


def bound_bits(ll_NxKxS: np.ndarray, num_dims: int, k: int | None = None) -> np.ndarray:
  """Per item: -sum_s log((1/k) sum_{j<k} p_s(x | sigma_{s,j})) in bits per dim, from the first k orders."""
  ll = np.asarray(ll_NxKxS, np.float64)
  k = ll.shape[1] if k is None else k
  if not 1 <= k <= ll.shape[1]:
    raise ValueError(f"k must be between 1 and the {ll.shape[1]} orders evaluated, got {k}")
  log_mean = logsumexp(ll[:, :k], axis=1) - np.log(k)  # [N, S]
  return -log_mean.sum(axis=1) / (num_dims * np.log(2.0))


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
  return float(values.mean()), stderr


def summarise(ll_NxKxS: np.ndarray, num_dims: int, elbo_per_item: np.ndarray | None = None) -> dict:
  """The per-K curve (mean ± standard error over items, bits per dim) and the paired gains of the bound at K.

  `order_mean` is the mean over the K orders of the exact per-order bits, an unbiased ELBO estimate from the same
  draws (E_sigma[-log p(x | sigma)] is the negative ELBO); the bound at K is never above it, item by item, and
  `gain_over_order_mean` (per K, paired per item) measures how much tighter the bound is with little noise: it
  shares the orders. `gain_over_elbo` compares with an independent ELBO estimate per item (`elbo_per_item`, e.g.
  evaluate_params' one-call estimates), noisier but free of any shared draws.
  """
  num_orders = ll_NxKxS.shape[1]
  per_order_bits = -np.asarray(ll_NxKxS, np.float64).sum(axis=2) / (num_dims * np.log(2.0))  # [N, K]
  order_mean_N = per_order_bits.mean(axis=1)
  curve = []
  for k in curve_ks(num_orders):
    bits_N = bound_bits(ll_NxKxS, num_dims, k)
    bpd, stderr = _mean_stderr(bits_N)
    gain, gain_stderr = _mean_stderr(order_mean_N - bits_N)
    curve.append(
      {"k": k, "bpd": bpd, "stderr": stderr, "gain_over_order_mean": gain, "gain_over_order_mean_stderr": gain_stderr}
    )
  mean, stderr = _mean_stderr(order_mean_N)
  result = {
    "num_orders": int(num_orders),
    "num_items": int(len(ll_NxKxS)),
    "curve": curve,
    "order_mean": {"bpd": mean, "stderr": stderr},
  }
  if elbo_per_item is not None:
    gain, gain_stderr = _mean_stderr(np.asarray(elbo_per_item) - bound_bits(ll_NxKxS, num_dims))
    result["gain_over_elbo"] = {"bits": gain, "stderr": gain_stderr}
  return result


def evaluate_orders(
  setup,
  params,
  items: np.ndarray,
  *,
  num_orders: int | None = None,
  orders=None,
  passes: int = 1,
  batch_size: int,
  seed: int = 0,
  policy=None,
  log_every_s: float = 30.0,
) -> dict:
  """The bound over orders on `items` beside the ELBO of the same parameters on the same items (`passes` random
  estimates per item by `held_out.evaluate_params`, under the same policy when there is one)."""
  objective_lib.require_ardm(setup.objective, "the bound over orders (--orders)")
  num_dims = int(np.prod(np.asarray(items).shape[1:]))
  elbo = held_out.evaluate_params(
    setup, params, items, passes=passes, batch_size=batch_size, seed=seed, policy=policy, log_every_s=log_every_s
  )
  ll = order_log_likelihoods(
    setup.apply_fn,
    setup.objective,
    params,
    items,
    num_orders=num_orders,
    orders=orders,
    policy=policy,
    batch_size=batch_size,
    seed=seed,
    mesh=setup.mesh,
    log_every_s=log_every_s,
  )
  result = summarise(ll, num_dims, elbo["per_item"])
  result["elbo"] = {"bpd": elbo["bpd"], "stderr": elbo["stderr"], "passes": elbo["passes"]}
  return result


def format_table(result: dict, unit: str) -> str:
  """The curve as a markdown table: the bound, and how far below the ELBO of the same orders it is (paired)."""
  lines = [f"| K orders | bound ({unit}) | below the mean per-order NLL (paired) |", "|---|---|---|"]
  for row in result["curve"]:
    lines.append(
      f"| {row['k']} | {row['bpd']:.4f} ± {row['stderr']:.4f} | {row['gain_over_order_mean']:.4f} ± "
      f"{row['gain_over_order_mean_stderr']:.4f} |"
    )
  mean = result["order_mean"]
  lines.append(
    f"| ELBO: mean of the {result['num_orders']} exact per-order NLLs | {mean['bpd']:.4f} ± {mean['stderr']:.4f} | |"
  )
  if "elbo" in result:
    elbo = result["elbo"]
    lines.append(
      f"| ELBO: {elbo['passes']} one-call estimate(s) per item | {elbo['bpd']:.4f} ± {elbo['stderr']:.4f} | |"
    )
  return "\n".join(lines)


def output_stem(
  num_orders: int, budget: int | None, step: int, naive: bool = False, equal: bool = False, num_items: int | None = None
) -> str:
  """eval_orders_K[_bB][_naive|_equal][_itemsN]_stepN: the default result name, apart from the ELBO's eval_stepN."""
  stem = f"eval_orders_{num_orders}"
  if budget is not None:
    stem += f"_b{budget}" + ("_naive" if naive else "_equal" if equal else "")
  stem += "" if num_items is None else f"_items{num_items}"
  return f"{stem}_step{step}"
