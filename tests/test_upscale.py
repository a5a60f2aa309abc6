"""Exact checks of the upscale ARDM: transition tables, renormalised conditionals, the stage-wise ELBO estimator
against enumerated likelihoods, normalisation over every item, and samples against the model's own probabilities."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardm_jax import ardm, policy_file, transitions, upscale, upscale_spec
from ardm_jax import policy as policy_lib
from ardm_jax.distributions import Categorical, DiscretisedLogisticMixture

TRANSITIONS = {
  "zero_256_b2": lambda: transitions.zero_least_significant(256, 2),
  "zero_256_b4": lambda: transitions.zero_least_significant(256, 4),
  "zero_256_b16": lambda: transitions.zero_least_significant(256, 16),
  "zero_17_b2": lambda: transitions.zero_least_significant(17, 2),
  "zero_17_b4": lambda: transitions.zero_least_significant(17, 4),
  "augment_256_b4": lambda: transitions.augment_least_significant(256, 4),
  "augment_17_b2": lambda: transitions.augment_least_significant(17, 2),
  "text8": transitions.text8_two_stage,
  "single_17": lambda: transitions.single_stage(17),
}
EXPECTED_STAGES = {
  "zero_256_b2": 8,
  "zero_256_b4": 4,
  "zero_256_b16": 2,
  "zero_17_b2": 5,
  "zero_17_b4": 3,
  "augment_256_b4": 4,
  "augment_17_b2": 5,
  "text8": 2,
  "single_17": 1,
}


# ----------------------------------------------------------------------------------------------- transitions
def children_of(tr, stage, states):
  """int [M, C]: the child in each slot of M level-`stage` states (-1: empty), by the library's generative step."""
  spec = upscale_spec.Upscale(tr, "direct")
  coarse = jnp.asarray(np.repeat(np.asarray(states).reshape(1, -1, 1), tr.num_slots, axis=-1))
  slot = jnp.broadcast_to(jnp.arange(tr.num_slots), coarse.shape)
  return np.asarray(upscale_spec.child_state(spec, coarse, slot, jnp.array([stage], jnp.int32)))[0]


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
def test_transitions_compose_absorb_and_reach_every_class(name):
  tr = TRANSITIONS[name]()
  S, K, N = tr.num_stages, tr.num_classes, tr.num_states
  assert S == EXPECTED_STAGES[name]
  spec = upscale_spec.Upscale(tr, "direct")
  x = jnp.arange(K)[None]
  level_of = lambda l: np.asarray(upscale_spec.states_at(spec, x, jnp.array([l], jnp.int32)))[0]
  for level in range(S):
    stage = jnp.array([level], jnp.int32)
    # Composition: data -> level l equals (data -> level l+1) followed by stage l's forward map.
    np.testing.assert_array_equal(level_of(level), upscale_spec.parents_of(spec, level_of(level + 1)[None], stage)[0])
    # The forward map of a stage is deterministic and defined exactly on the level-(l+1) states.
    parents = np.asarray(upscale_spec.parents_of(spec, jnp.arange(N)[None], stage))[0]
    np.testing.assert_array_equal(np.flatnonzero(parents >= 0), np.unique(level_of(level + 1)))
  np.testing.assert_array_equal(level_of(0), np.full(K, tr.absorbing_state))
  np.testing.assert_array_equal(level_of(S), np.arange(K))
  # Generative reachability: from the absorbing state, through every slot of every stage, every class is reached.
  reach = np.array([tr.absorbing_state])
  for level in range(S):
    kids = children_of(tr, level, reach)
    reach = np.unique(kids[kids >= 0])
    np.testing.assert_array_equal(reach, np.unique(tr.levels[level + 1]))
  np.testing.assert_array_equal(reach, np.arange(K))


def test_zero_least_significant_levels_are_floored_values_and_slots_are_digits():
  tr = transitions.zero_least_significant(256, 4)
  k = np.arange(256)
  for level in range(5):
    np.testing.assert_array_equal(tr.levels[level], k - k % 4 ** (4 - level))
  for s in range(4):
    np.testing.assert_array_equal(tr.slots[s], (k >> (2 * (3 - s))) & 3)
  big = transitions.zero_least_significant(65536, 2)
  assert (big.num_stages, big.num_states, big.num_slots, big.absorbing_state) == (16, 65536, 2, 0)
  np.testing.assert_array_equal(big.levels[3], (np.arange(65536) >> 13) << 13)
  assert big.range_lo is not None


def test_seventeen_levels_leave_empty_digits():
  tr = transitions.zero_least_significant(17, 2)
  # 16 = 10000b: after stage 0 chose the top digit 1, no later digit can be 1.
  for s in range(1, 5):
    assert children_of(tr, s, [16]).tolist() == [[16, -1]]
  assert children_of(tr, 0, [0]).tolist() == [[0, 16]]


def test_augmented_levels_use_disjoint_ids():
  tr = transitions.augment_least_significant(17, 2)
  ids = [set(np.unique(row).tolist()) for row in tr.levels]
  for a, b in itertools.combinations(range(len(ids)), 2):
    assert not ids[a] & ids[b]
  assert tr.num_states == 17 + 9 + 5 + 3 + 2 + 1 and tr.absorbing_state == tr.num_states - 1


def test_text8_first_stage_is_space_vowel_consonant():
  tr = transitions.text8_two_stage()
  alphabet = " abcdefghijklmnopqrstuvwxyz"
  coarse = {c: tr.levels[1][alphabet.index(c)] for c in alphabet}
  assert coarse[" "] == 0 and len(set(coarse.values())) == 3
  assert {c for c in alphabet if coarse[c] == coarse["a"]} == set("aeiou")
  assert coarse["y"] == coarse["b"] and tr.num_states == 30 and tr.range_lo is None


@pytest.mark.parametrize(
  "bad",
  [
    lambda: transitions.zero_least_significant(256, 1),
    lambda: transitions.zero_least_significant(1, 2),
    lambda: transitions.make_transitions("zero_least_significant", 256),
    lambda: transitions.make_transitions("text8", 28),
    lambda: transitions.make_transitions("bits", 256, 2),
    # not a tree: data 1 and 2 share a level-1 state but have different level-0... states
    lambda: transitions.Transitions("bad", np.array([[0, 0, 1], [0, 1, 1], [0, 1, 2]]), np.zeros((2, 3), int)),
    lambda: upscale_spec.Upscale(transitions.zero_least_significant(8, 2), "direct", Categorical(8)),
    lambda: upscale_spec.Upscale(transitions.zero_least_significant(8, 2), "data", Categorical(9)),
  ],
)
def test_bad_configuration_is_a_value_error(bad):
  with pytest.raises(ValueError):
    bad()


# ----------------------------------------------------------------------------------------------- conditionals
def _spec(tr_name, parametrisation, dist=None):
  tr = TRANSITIONS[tr_name]() if tr_name in TRANSITIONS else tr_name
  return upscale_spec.Upscale(tr, parametrisation, dist)


@pytest.mark.parametrize(
  "tr_name,dist",
  [
    ("zero_17_b2", "cat"),
    ("augment_17_b2", "cat"),
    ("text8", "cat"),
    ("zero_17_b4", "logistic"),
    ("text8", "logistic"),
  ],
)
def test_data_conditional_is_renormalised_push_forward(tr_name, dist):
  """p(child v | coarse u) = sum_{k -> v} p(k) / sum_{k -> u} p(k): sums to 1, zero outside u's children."""
  tr = TRANSITIONS[tr_name]()
  K = tr.num_classes
  d = Categorical(K) if dist == "cat" else DiscretisedLogisticMixture(K, 3)
  spec = upscale_spec.Upscale(tr, "data", d)
  rng = np.random.default_rng(0)
  B, D = tr.num_stages, 6
  net_out = jnp.asarray(rng.normal(size=(B, D, d.num_outputs)) * 2, jnp.float32)
  stage_B = jnp.arange(B, dtype=jnp.int32)
  x = jnp.asarray(rng.integers(0, K, size=(B, D)), jnp.int32)
  target = upscale_spec.slot_of(spec, x, stage_B)

  @jax.jit
  def run():
    coarse = upscale_spec.states_at(spec, x, stage_B)
    return (
      coarse,
      upscale_spec.slot_log_probs(spec, net_out, coarse, stage_B),
      d.log_pmf(net_out),
      upscale_spec.log_probs_of_data(spec, net_out, x, stage_B),
    )

  coarse, logp_C, logp_K, lp = (np.asarray(v) for v in run())
  logp_C, p_K = logp_C.astype(np.float64), np.exp(logp_K.astype(np.float64))
  for b in range(B):
    s = b
    kids = children_of(tr, s, coarse[b])
    for i in range(D):
      u = int(coarse[b, i])
      under_u = tr.levels[s] == u
      p_state = np.zeros(tr.num_states)
      for j, v in enumerate(kids[i]):
        if v >= 0:
          p_state[v] += np.exp(logp_C[b, i, j])
        else:
          assert logp_C[b, i, j] == -np.inf
      want = np.zeros(tr.num_states)
      np.add.at(want, tr.levels[s + 1][under_u], p_K[b, i][under_u])
      want /= p_K[b, i][under_u].sum()
      np.testing.assert_allclose(p_state, want, atol=2e-6)
      assert p_state.sum() == pytest.approx(1.0, abs=2e-6)
      outside = np.setdiff1d(np.arange(tr.num_states), kids[i])
      assert (p_state[outside] == 0).all()
  # The training path (one target per variable) agrees with the full table.
  picked = np.take_along_axis(logp_C, np.asarray(target)[..., None], -1)[..., 0]
  np.testing.assert_allclose(lp.reshape(B, D), picked, atol=2e-5)


@pytest.mark.parametrize("tr_name", ["zero_17_b2", "text8"])
def test_direct_conditional_is_masked_softmax_of_this_stage(tr_name):
  spec = _spec(tr_name, "direct")
  tr = spec.transitions
  S, C = spec.num_stages, spec.num_slots
  rng = np.random.default_rng(1)
  D = 5
  net_out = rng.normal(size=(S, D, S * C)).astype(np.float32)
  stage_B = jnp.arange(S, dtype=jnp.int32)
  x = jnp.asarray(rng.integers(0, tr.num_classes, size=(S, D)), jnp.int32)
  coarse = np.asarray(upscale_spec.states_at(spec, x, stage_B))
  logp = np.asarray(
    jax.jit(lambda: upscale_spec.slot_log_probs(spec, jnp.asarray(net_out), jnp.asarray(coarse), stage_B))()
  )
  for s in range(S):
    kids = children_of(tr, s, coarse[s])
    for i in range(D):
      valid = kids[i] >= 0
      logits = net_out[s, i].reshape(S, C)[s]
      want = np.where(valid, np.exp(logits - logits.max()), 0.0)
      np.testing.assert_allclose(np.exp(logp[s, i]), want / want.sum(), atol=1e-6)


@pytest.mark.parametrize(
  "tr_name,dist",
  [("zero_17_b2", Categorical(17)), ("text8", Categorical(27)), ("augment_17_b2", DiscretisedLogisticMixture(17, 2))],
)
def test_data_conditionals_telescope_to_the_data_distribution(tr_name, dist):
  """With one K-way prediction for every stage, the product of the stage conditionals is p(x) itself."""
  spec = upscale_spec.Upscale(TRANSITIONS[tr_name](), "data", dist)
  rng = np.random.default_rng(2)
  net_out = jnp.asarray(rng.normal(size=(3, 4, dist.num_outputs)), jnp.float32)
  x = jnp.asarray(rng.integers(0, dist.num_classes, size=(3, 4)), jnp.int32)
  total = jax.jit(
    lambda: sum(
      upscale_spec.log_probs_of_data(spec, net_out, x, jnp.full((3,), s, jnp.int32)) for s in range(spec.num_stages)
    )
  )()
  np.testing.assert_allclose(total.reshape(3, 4), dist.log_prob(net_out, x), atol=2e-5)


def test_sixteen_bit_logistic_stages_telescope():
  """Audio scale: K = 65,536, b = 2, 16 stages of range masses (no K-sized tensor anywhere)."""
  dist = DiscretisedLogisticMixture(65536, 4)
  spec = upscale_spec.Upscale(transitions.zero_least_significant(65536, 2), "data", dist)
  rng = np.random.default_rng(3)
  net_out = jnp.asarray(rng.normal(size=(2, 8, dist.num_outputs)), jnp.float32)
  x = jnp.asarray(rng.integers(0, 65536, size=(2, 8)), jnp.int32)

  @jax.jit
  def run():
    per_stage = jax.vmap(lambda s: upscale_spec.log_probs_of_data(spec, net_out, x, jnp.full((2,), s)))(jnp.arange(16))
    stage = jnp.full((2,), 7, jnp.int32)
    logp = upscale_spec.slot_log_probs(spec, net_out, upscale_spec.states_at(spec, x, stage), stage)
    return per_stage.sum(0).reshape(2, 8), dist.log_prob(net_out, x), jnp.exp(logp).sum(-1)

  total, direct, slot_mass = run()
  np.testing.assert_allclose(total, direct, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(slot_mass, 1.0, atol=1e-5)


def test_network_input_hides_fine_values_of_unknown_variables():
  spec = _spec("zero_17_b2", "data")
  # Stage 3 of 5 refines multiples of 4 into multiples of 2. The two items agree at level 4 where this stage
  # already knows the variables (0, 2) and at level 3 where it does not (1, 3), but differ in 0, 1 and 3.
  x = jnp.array([[5, 9, 16, 3]], jnp.int32)
  x_other = jnp.array([[4, 11, 16, 0]], jnp.int32)
  stage = jnp.array([3], jnp.int32)
  known = jnp.array([[True, False, True, False]])
  x_in, _, _ = upscale_spec.stage_inputs(spec, x, stage, known)
  x_in_other, _, _ = upscale_spec.stage_inputs(spec, x_other, stage, known)
  np.testing.assert_array_equal(x_in, x_in_other)
  assert x_in.tolist() == [[4, 8, 16, 0]]


# ----------------------------------------------------------------------------------------------- toy network
def toy_apply_and_params(spec, data_shape, seed=0, width=24):
  """A tiny MLP that conditions on the states, the mask and the global step (a stand-in for the real nets)."""
  D = int(np.prod(data_shape))
  N, O, T = spec.num_input_classes, spec.num_outputs, spec.num_net_steps(D)
  rng = np.random.default_rng(seed)
  params = {
    "w1": jnp.asarray(rng.normal(size=(D * N + D + 1, width)), jnp.float32),
    "w2": jnp.asarray(rng.normal(size=(width, D * O)) * 0.7, jnp.float32),
  }

  def apply_fn(params, x_in, known, t, train, key):
    del train, key
    b = x_in.shape[0]
    onehot = jax.nn.one_hot(x_in.reshape(b, -1), N).reshape(b, -1)
    feats = jnp.concatenate([onehot, known.reshape(b, -1).astype(jnp.float32), t[:, None] / T], axis=-1)
    return (jnp.tanh(feats @ params["w1"]) @ params["w2"]).reshape(*x_in.shape, O)

  return apply_fn, params


def all_orders(D):
  return np.array([np.argsort(p) for p in itertools.permutations(range(D))], np.int32)


SPECS = {
  "zero8_data": lambda: upscale_spec.Upscale(transitions.zero_least_significant(8, 2), "data"),
  "zero8_direct": lambda: upscale_spec.Upscale(transitions.zero_least_significant(8, 2), "direct"),
  "zero6_direct": lambda: upscale_spec.Upscale(transitions.zero_least_significant(6, 2), "direct"),
  "augment8_logistic": lambda: upscale_spec.Upscale(
    transitions.augment_least_significant(8, 2), "data", DiscretisedLogisticMixture(8, 2)
  ),
  "single8_logistic": lambda: upscale_spec.Upscale(
    transitions.single_stage(8), "data", DiscretisedLogisticMixture(8, 3)
  ),
}


# zero8_direct is left to the cheaper tests: zero6_direct covers the direct parametrisation, empty slots included.
EXACT_SPECS = ["zero8_data", "zero6_direct", "augment8_logistic", "single8_logistic"]


@pytest.mark.parametrize("name", EXACT_SPECS)
def test_elbo_estimator_expectation_equals_enumerated_stage_likelihoods(name):
  """E_{s, t, sigma}[estimator] == sum_s E_sigma[-log p_s(x^{(s+1)} | x^{(s)}, sigma)], enumerating everything."""
  spec = SPECS[name]()
  D, S = 3, spec.num_stages
  apply_fn, params = toy_apply_and_params(spec, (D,))
  orders = all_orders(D)
  rng = np.random.default_rng(4)
  items = rng.integers(0, spec.num_classes, size=(3, D)).astype(np.int32)
  combos = np.array(list(itertools.product(range(len(items)), range(S), range(len(orders)), range(D))))
  out = jax.jit(lambda x, s, sig, t: upscale.elbo_terms_given(apply_fn, params, x, s, sig, t, spec=spec))(
    jnp.asarray(items[combos[:, 0]]),
    jnp.asarray(combos[:, 1], jnp.int32),
    jnp.asarray(orders[combos[:, 2]]),
    jnp.asarray(combos[:, 3], jnp.int32),
  )
  estimate = np.asarray(out["nll"], np.float64).reshape(len(items), -1).mean(1)
  np.testing.assert_array_equal(np.asarray(out["t"]), combos[:, 1] * D + combos[:, 3])

  # Right side: sequential likelihood under each order, the same order in every stage, averaged over orders.
  pairs = np.array(list(itertools.product(range(len(items)), range(len(orders)))))
  sigma_BxSxD = np.repeat(orders[pairs[:, 1]][:, None, :], S, axis=1)
  ll = jax.jit(
    lambda x, sig: upscale.policy_log_likelihood(
      apply_fn, params, x, sig, jnp.asarray(upscale.sequential_policy(S, D)), spec=spec
    )
  )(jnp.asarray(items[pairs[:, 0]]), jnp.asarray(sigma_BxSxD))
  exact = -np.asarray(ll, np.float64).reshape(len(items), -1).mean(1)
  np.testing.assert_allclose(estimate, exact, rtol=2e-5)


@pytest.mark.parametrize("name", EXACT_SPECS)
def test_likelihood_sums_to_one_over_every_item(name):
  """Under a fixed order per stage, sequential and parallel policies are both normalised over all K^D items."""
  spec = SPECS[name]()
  D, S, K = 3, spec.num_stages, spec.num_classes
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=1)
  items = jnp.asarray(np.array(list(itertools.product(range(K), repeat=D)), np.int32))
  rng = np.random.default_rng(5)
  sigma_SxD = np.stack([rng.permutation(D) for _ in range(S)]).astype(np.int32)
  sigma = jnp.asarray(np.broadcast_to(sigma_SxD, (len(items), S, D)))
  fn = jax.jit(lambda pol: upscale.policy_log_likelihood(apply_fn, params, items, sigma, pol, spec=spec))
  parallel = upscale.flatten_policies(([[0, 2], [0], [0, 1]] + [[0]] * S)[:S], D)
  for policy in (upscale.sequential_policy(S, D), parallel):
    total = np.exp(np.asarray(fn(jnp.asarray(policy)), np.float64)).sum()
    assert total == pytest.approx(1.0, abs=5e-5)


def test_policy_estimator_expectation_equals_policy_likelihood():
  spec = SPECS["zero8_data"]()
  D, S = 3, spec.num_stages
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=2)
  policy = jnp.asarray(upscale.flatten_policies([[0, 1], [0], [0, 2]], D))
  P = policy.shape[0]
  x = jnp.asarray([[1, 6, 3]] * P, jnp.int32)
  rng = np.random.default_rng(6)
  sigma = jnp.asarray(np.broadcast_to(np.stack([rng.permutation(D) for _ in range(S)]), (P, S, D)), jnp.int32)
  terms, exact = jax.jit(
    lambda: (
      upscale.policy_terms_given(apply_fn, params, x, sigma, jnp.arange(P), policy, spec=spec),
      upscale.policy_log_likelihood(apply_fn, params, x[:1], sigma[:1], policy, spec=spec),
    )
  )()
  assert float(jnp.mean(terms["nll"])) == pytest.approx(-float(exact[0]), rel=1e-5)
  np.testing.assert_array_equal(terms["stage"], np.asarray(policy) // D)


def test_stochastic_elbo_terms_cover_stages_and_steps():
  spec = SPECS["zero8_direct"]()
  apply_fn, params = toy_apply_and_params(spec, (3,))
  x = jnp.zeros((48, 3), jnp.int32)
  out = jax.jit(lambda k: upscale.elbo_terms(apply_fn, params, x, k, spec=spec, t_sampling="stratified"))(
    jax.random.PRNGKey(0)
  )
  t, stage, t_in = (np.asarray(out[k]) for k in ("t", "stage", "t_in_stage"))
  np.testing.assert_array_equal(t, stage * 3 + t_in)
  assert np.bincount(t, minlength=9).min() >= 5  # stratified: 48 draws spread over the 9 (stage, step) pairs
  assert np.isfinite(np.asarray(out["nll"])).all()


def test_training_gradients_are_finite_with_empty_slots():
  """Masked slots (-inf) and range masses must not leak NaN into the gradients of the training loss."""
  x = jnp.asarray(np.random.default_rng(10).integers(0, 6, size=(32, 3)), jnp.int32)
  for name in ("zero6_direct", "augment8_logistic"):
    spec = SPECS[name]()
    apply_fn, params = toy_apply_and_params(spec, (3,))
    loss = lambda p: jnp.mean(upscale.elbo_terms(apply_fn, p, x, jax.random.PRNGKey(1), spec=spec)["nll"])
    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)), name


def test_total_budget_split_beats_equal_split_and_matches_brute_force():
  D, totals = 6, (2, 5, 9)
  rng = np.random.default_rng(11)
  # A coarse stage that is cheap and a fine stage that is expensive: an equal split wastes calls on stage 0.
  losses = np.stack([np.sort(rng.uniform(0.0, 0.2, D))[::-1], np.sort(rng.uniform(0.5, 3.0, D))[::-1]])
  pf = policy_file.build_policy_file(losses, [], D, total_budgets=totals)
  for total in totals:
    pol = policy_file.global_policy(pf, total)
    entry = policy_file.total_budget_entries(pf)[str(total)]
    budgets, cost = entry["stage_budgets"], entry["expected_bpd"] * D
    assert len(pol) == total == sum(budgets) and upscale.validate_policy(pol, D, 2).tolist() == pol.tolist()
    per_stage = [policy_file.policy_for_budget(pf, b, stage=s) for s, b in enumerate(budgets)]
    np.testing.assert_array_equal(pol, upscale.flatten_policies(per_stage, D))
    assert cost == pytest.approx(sum(policy_lib.policy_cost(L, p) for L, p in zip(losses, per_stage)))
    brute = min(
      policy_lib.plain_dp(losses[0], b)[1] + policy_lib.plain_dp(losses[1], total - b)[1]
      for b in range(max(1, total - D), min(D, total - 1) + 1)
    )
    assert cost == pytest.approx(brute)
    equal = policy_file.total_budget_entries(pf, "equal")[str(total)]
    assert equal["stage_budgets"] == [total - total // 2, total // 2] and cost <= equal["expected_bpd"] * D + 1e-12
  with pytest.raises(ValueError):
    policy_file.build_policy_file(losses, [], D, total_budgets=[1])


def test_flatten_policies_offsets_stages_and_errors():
  flat = upscale.flatten_policies([[0, 5], [0], [0, 2, 7]], 8)
  assert flat.tolist() == [0, 5, 8, 16, 18, 23] and flat.dtype == np.int32
  with pytest.raises(ValueError, match="stage 1"):
    upscale.flatten_policies([[0], [1]], 8)
  with pytest.raises(ValueError, match="start every stage"):
    upscale.validate_policy([0, 5, 16], 8, 3)


# ----------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", ["zero8_data", "zero6_direct", "augment8_logistic", "single8_logistic"])
def test_samples_refine_consistently_and_follow_the_model(name):
  spec = SPECS[name]()
  D, S, K = 2, spec.num_stages, spec.num_classes
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=3)
  n = 6000
  sigma_SxD = np.array([[1, 0], [0, 1], [1, 0]][:S], np.int32)
  sigma = jnp.asarray(np.broadcast_to(sigma_SxD, (n, S, D)))
  policy = jnp.asarray(upscale.flatten_policies([[0], [0, 1], [0]][:S], D))  # stage 0 in one call
  x, chain = jax.jit(
    lambda k: upscale.generate(
      apply_fn, params, k, jnp.zeros((n, D), jnp.int32), sigma, policy, spec=spec, return_chain=True
    )
  )(jax.random.PRNGKey(7))
  x, chain = np.asarray(x), np.asarray(chain)
  assert x.min() >= 0 and x.max() < K
  # Every call refines only its own variables, from their level-s state to their level-(s+1) state.
  tr = spec.transitions
  ends = np.append(np.asarray(policy)[1:], S * D)
  for k, (start_g, end_g) in enumerate(zip(np.asarray(policy), ends)):
    s, hi = start_g // D, end_g - (start_g // D) * D
    done = sigma_SxD[s] < hi
    want = np.where(done[None, :], tr.levels[s + 1][x], tr.levels[s][x])
    np.testing.assert_array_equal(chain[k], want)
  # Empirical frequencies against exp(log-likelihood) under the same orders and policy.
  items = np.array(list(itertools.product(range(K), repeat=D)), np.int32)
  ll = jax.jit(
    lambda: upscale.policy_log_likelihood(
      apply_fn,
      params,
      jnp.asarray(items),
      jnp.asarray(np.broadcast_to(sigma_SxD, (len(items), S, D))),
      policy,
      spec=spec,
    )
  )()
  p = np.exp(np.asarray(ll, np.float64))
  assert p.sum() == pytest.approx(1.0, abs=5e-5)
  freq = np.bincount(x[:, 0] * K + x[:, 1], minlength=K * K) / n
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 2e-3)


def test_single_stage_is_the_plain_oa_ardm():
  """One stage under the absorbing class K: losses, likelihoods and even the samples equal ardm's, bit for bit."""
  spec = upscale_spec.Upscale(transitions.single_stage(5), "data")
  assert (spec.num_input_classes, spec.num_outputs, spec.transitions.absorbing_state) == (6, 5, 5)
  D, B = 3, 12
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=5)
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.integers(0, 5, size=(B, D)), jnp.int32)
  sigma = jnp.asarray(np.stack([rng.permutation(D) for _ in range(B)]), jnp.int32)
  t = jnp.asarray(rng.integers(0, D, size=B), jnp.int32)
  policy = jnp.asarray([0, 2], jnp.int32)

  @jax.jit
  def run(key):
    ours = (
      upscale.elbo_terms_given(apply_fn, params, x, jnp.zeros(B, jnp.int32), sigma, t, spec=spec)["nll"],
      upscale.policy_log_likelihood(apply_fn, params, x, sigma[:, None], policy, spec=spec),
      upscale.generate(apply_fn, params, key, x, sigma[:, None], policy, spec=spec),
    )
    theirs = (
      ardm.elbo_terms_given(apply_fn, params, x, sigma, t, num_classes=5)["nll"],
      ardm.policy_log_likelihood(apply_fn, params, x, sigma, policy, num_classes=5),
      ardm.generate(apply_fn, params, key, x, sigma, policy, num_classes=5),
    )
    return ours, theirs

  ours, theirs = run(jax.random.PRNGKey(3))
  np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
  np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
  np.testing.assert_array_equal(ours[2], theirs[2])


def test_generate_keeps_observed_values():
  spec = upscale_spec.Upscale(transitions.text8_two_stage(), "direct")
  D = 4
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=4)
  observed = jnp.array([[True, False, True, False]] * 8)
  x_init = jnp.array([[3, 0, 26, 0]] * 8, jnp.int32)

  @jax.jit
  def run(key):
    key_o, key_s = jax.random.split(key)
    sigma = jax.vmap(lambda k: ardm.orders_observed_first(k, observed), out_axes=1)(jax.random.split(key_o, 2))
    return upscale.generate(
      apply_fn, params, key_s, x_init, sigma, jnp.asarray(upscale.sequential_policy(2, D)), spec=spec, observed=observed
    )

  x = np.asarray(run(jax.random.PRNGKey(8)))
  assert (x[:, [0, 2]] == [3, 26]).all() and x.max() < 27
