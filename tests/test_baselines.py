"""The paper's baselines: D3PM-absorbing against its definition by enumeration, the ARM's normalisation and
causality, both samplers against exact distributions, and their place in the trainer and the jobs."""

import itertools
import os

from conftest import newest_result
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax import baselines, configs, objective, train
from ardm_jax.nets import build_network

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_denoiser(num_classes: int, seed: int = 0):
  """A deterministic stand-in network whose logits depend on every input, the mask and the step."""
  w = np.random.default_rng(seed).normal(size=(5, num_classes))

  def apply_fn(params, x_in, known, t, train, key):
    del params, train, key
    x = x_in.reshape(x_in.shape[0], -1).astype(jnp.float32)
    pos = jnp.arange(x.shape[1], dtype=jnp.float32)
    feats = jnp.stack(
      [
        x,
        jnp.broadcast_to(x.sum(1, keepdims=True), x.shape),
        known.reshape(x.shape),
        jnp.broadcast_to(t[:, None].astype(jnp.float32), x.shape),
        pos[None] + 0 * x,
      ],
      -1,
    )
    return jnp.sin(feats @ jnp.asarray(w, jnp.float32) * 1.7).reshape(x_in.shape + (num_classes,)) * 2.0

  return apply_fn


def _d3pm_probs(apply_fn, x_in, masked, t, model, num_steps):
  """p(x_0^i = k | x_t) [D, K] of the stand-in network for one item (float64 on the host)."""
  known = ~masked
  t_net = baselines.d3pm_net_step(jnp.array([t]), model.num_diffusion_steps, num_steps)
  logits = apply_fn(None, jnp.asarray(x_in)[None], jnp.asarray(known)[None], t_net, False, None)[0]
  return np.asarray(jax.nn.softmax(logits.astype(jnp.float64) if jax.config.x64_enabled else logits), np.float64)


def _x_t(x0, tau, t, K):
  """State at time t given every variable's absorption time tau_i (masked at t iff t >= tau_i)."""
  masked = t >= tau
  return np.where(masked, K, x0), masked


def _d3pm_enumeration(apply_fn, model, x0):
  """(-ELBO from the definition E_q[log q(x_{1:T}|x_0) - log p(x_{0:T})], exact -log p(x_0)), both by enumerating
  every vector of absorption times tau (forward process: P(tau_i = s) = 1/T independently)."""
  T, K, D = model.num_diffusion_steps, model.num_classes, x0.size
  nelbo, marginal = 0.0, 0.0
  for tau in itertools.product(range(1, T + 1), repeat=D):
    tau = np.array(tau)
    log_q = D * np.log(1.0 / T)
    log_p = 0.0  # p(x_T) = 1: x_T is all masked
    for t in range(T, 0, -1):
      x_in, masked = _x_t(x0, tau, t, K)
      probs = _d3pm_probs(apply_fn, x_in, masked, t, model, D)
      for i in np.flatnonzero(masked):
        log_p += np.log(probs[i, x0[i]] / t) if tau[i] == t else np.log((t - 1) / t)
    nelbo += np.exp(log_q) * (log_q - log_p)
    marginal += np.exp(log_p)  # each tau is one reverse trajectory ending in x0
  return nelbo, -np.log(marginal)


def _d3pm_estimator_mean(apply_fn, model, x0):
  """The training estimator's exact expectation: every t and every mask, with their probabilities."""
  T, D = model.num_diffusion_steps, x0.size
  total = 0.0
  for t in range(1, T + 1):
    for mask in itertools.product([False, True], repeat=D):
      mask = np.array(mask)
      prob = (1.0 / T) * (t / T) ** mask.sum() * (1 - t / T) ** (D - mask.sum())
      terms = baselines.d3pm_terms_given(
        apply_fn, None, jnp.asarray(x0)[None], jnp.array([t]), jnp.asarray(mask)[None], model=model
      )
      total += prob * float(terms["nll"][0])
  return total


@pytest.mark.parametrize("x0", [np.array([0, 1]), np.array([2, 2])])
def test_d3pm_estimator_matches_the_elbo_definition_by_enumeration(x0):
  model = baselines.D3PMAbsorbing(num_classes=3, num_diffusion_steps=3)
  fn = _fake_denoiser(3)
  nelbo, nll = _d3pm_enumeration(fn, model, x0)
  np.testing.assert_allclose(_d3pm_estimator_mean(fn, model, x0), nelbo, rtol=1e-5)
  assert nelbo >= nll - 1e-9  # a bound on the T-step model's exact NLL


def test_d3pm_every_step_estimator_has_the_elbo_as_its_mean():
  model = baselines.D3PMAbsorbing(num_classes=3, num_diffusion_steps=3)
  fn = _fake_denoiser(3)
  x0 = np.array([0, 2])
  nelbo, _ = _d3pm_enumeration(fn, model, x0)
  n = 4000
  x = jnp.broadcast_to(jnp.asarray(x0), (n, 2))
  draws = np.asarray(baselines.d3pm_terms_every_step(fn, None, x, jax.random.PRNGKey(3), model=model))
  assert abs(draws.mean() - nelbo) < 4 * draws.std() / np.sqrt(n), (draws.mean(), nelbo)
  # Lower variance than the one-step estimator at the same number of draws.
  one = np.asarray(baselines.d3pm_terms(fn, None, x, jax.random.PRNGKey(4), model=model)["nll"])
  assert draws.std() < one.std()


def test_d3pm_generative_process_is_normalised_and_the_sampler_draws_from_it():
  model = baselines.D3PMAbsorbing(num_classes=2, num_diffusion_steps=3)
  fn = _fake_denoiser(2, seed=1)
  exact = {x: np.exp(-_d3pm_enumeration(fn, model, np.array(x))[1]) for x in itertools.product(range(2), repeat=2)}
  np.testing.assert_allclose(sum(exact.values()), 1.0, rtol=1e-5)
  n = 4000
  draws = np.asarray(
    jax.jit(lambda k: baselines.d3pm_generate(fn, None, k, n, (2,), model=model))(jax.random.PRNGKey(0))
  )
  assert draws.max() < 2  # nothing left masked after T steps
  for x, p in exact.items():
    freq = np.mean(np.all(draws == np.array(x), axis=1))
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (x, freq, p)


def _tiny_transformer(shape, causal, K=3):
  cfg = ml_collections.ConfigDict(
    dict(name="transformer", num_layers=2, emb_dim=16, mlp_dim=32, num_heads=2, causal=causal)
  )
  net = build_network(cfg, shape, K)
  x = jnp.zeros((1,) + shape, jnp.int32)
  params = net.init(jax.random.PRNGKey(0), x, jnp.ones(x.shape, bool), jnp.zeros((1,), jnp.int32))["params"]
  # Larger weights than the init so the conditionals clearly depend on the context.
  params = jax.tree.map(lambda p: p * 3.0, params)
  return lambda p, x_in, known, t, train, key: net.apply({"params": p}, x_in, known, t), params


@pytest.mark.parametrize("shape", [(3,), (1, 3, 1)])
def test_arm_probabilities_sum_to_one_only_with_a_causal_network(shape):
  K = 3
  every_x = jnp.asarray(list(itertools.product(range(K), repeat=3))).reshape((-1,) + shape)
  totals = {}
  for causal in (True, False):
    fn, params = _tiny_transformer(shape, causal)
    logp = baselines.arm_log_probs(fn, params, every_x, baselines.ARM(K)).sum(axis=1)
    totals[causal] = float(jnp.exp(logp).sum())
  np.testing.assert_allclose(totals[True], 1.0, rtol=1e-5)
  assert abs(totals[False] - 1.0) > 1e-3  # the check can fail: a bidirectional network sees the future


def test_arm_conditional_i_depends_on_earlier_variables_only():
  fn, params = _tiny_transformer((4,), causal=True)
  model = baselines.ARM(3)
  x = jnp.array([[0, 1, 2, 1]])
  base = baselines.arm_log_probs(fn, params, x, model)[0]
  for j in range(4):
    changed = baselines.arm_log_probs(fn, params, x.at[0, j].set((x[0, j] + 1) % 3), model)[0]
    np.testing.assert_array_equal(changed[:j], base[:j])  # p(x_i | x_<i) for i < j never sees x_j
    if j < 3:
      assert np.any(np.abs(changed[j + 1 :] - base[j + 1 :]) > 1e-4)


def test_arm_sampler_draws_from_the_model():
  K, shape, n = 3, (2,), 3000
  fn, params = _tiny_transformer(shape, causal=True)
  model = baselines.ARM(K)
  every_x = jnp.asarray(list(itertools.product(range(K), repeat=2)))
  exact = np.exp(np.asarray(baselines.arm_log_probs(fn, params, every_x, model).sum(axis=1)))
  draws = np.asarray(
    jax.jit(lambda k: baselines.arm_generate(fn, params, k, n, shape, model=model))(jax.random.PRNGKey(1))
  )
  for x, p in zip(np.asarray(every_x), exact):
    freq = np.mean(np.all(draws == x, axis=1))
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (x, freq, p)


def test_objective_config_errors_name_the_fix():
  ardm_cfg = ml_collections.ConfigDict(dict(objective="arm"))
  with pytest.raises(ValueError, match="causal=True"):
    objective.build(ardm_cfg, 17, ml_collections.ConfigDict(dict(name="unet")))
  with pytest.raises(ValueError, match="bidirectional"):
    objective.build(
      ml_collections.ConfigDict(dict(objective="d3pm_absorbing")),
      17,
      ml_collections.ConfigDict(dict(name="transformer", causal=True)),
    )
  with pytest.raises(ValueError, match="unknown ardm.objective"):
    objective.build(ml_collections.ConfigDict(dict(objective="md4")), 17, None)
  with pytest.raises(ValueError, match="upscale='none'"):
    objective.build(
      ml_collections.ConfigDict(dict(objective="d3pm_absorbing", upscale="zero_least_significant")), 17, None
    )
  with pytest.raises(ValueError, match="--budget must be D = 64"):
    objective.with_generation_budget(baselines.ARM(17), 10, 64)


@pytest.fixture(scope="module")
def trained_baselines(tmp_path_factory):
  root = tmp_path_factory.mktemp("baselines")
  out = {}
  for name in ("digits_arm", "digits_d3pm"):
    config = configs.load_config_file(os.path.join(REPO, "experiments", f"{name}.py:tiny"))
    result = train.train_and_evaluate(config, str(root / name))
    out[name] = (str(root / name), result)
  return out


@pytest.mark.xdist_group("test_baselines")
def test_baselines_train_and_evaluate_in_the_one_trainer(trained_baselines):
  """train.train_and_evaluate builds each baseline from its config, runs every configured step with the baseline's
  terms feeding the per-step tracker, checkpoints it, and evaluates the test split with it."""
  from ardm_jax import workdir

  kinds = {"digits_arm": baselines.ARM, "digits_d3pm": baselines.D3PMAbsorbing}
  for name, (w, result) in trained_baselines.items():
    config = configs.load_config_file(os.path.join(REPO, "experiments", f"{name}.py:tiny"))
    num_steps = int(config.train.num_steps)
    assert result["step"] == num_steps and not result["preempted"], name
    model = workdir.open_workdir(w)
    assert isinstance(model.setup.objective, kinds[name]) and model.step == num_steps, name
    # The baseline's lt_bits reached the trainer's tracker: finite per-step losses where it has samples.
    means, counts = workdir.restore_tracker(model)
    assert counts.sum() > 0 and np.isfinite(means[counts > 0]).all() and (means[counts > 0] > 0).all(), name
    test = result["test"]
    assert test["passes"] == int(config.train.eval_passes) and test["num_items"] > 1, name
    assert np.isfinite(test["bpd"]) and test["bpd"] > 0 and np.isfinite(test["stderr"]), name


@pytest.mark.xdist_group("test_baselines")
def test_baseline_jobs_through_the_cli(trained_baselines, tmp_path, capsys):
  from ardm_jax import cli

  arm, _ = trained_baselines["digits_arm"]
  d3pm, _ = trained_baselines["digits_d3pm"]
  assert cli.main(["eval", "--workdir", d3pm, "--budget", "5", "--exact"]) == 0
  assert "5 steps" in capsys.readouterr().out
  saved = newest_result(d3pm, "eval_budget5_exact")
  assert saved["budget"] == 5 and saved["objective"] == "d3pm_absorbing" and np.isfinite(saved["bpd"])
  assert cli.main(["sample", "--workdir", d3pm, "--budget", "5", "--num", "4", "--out", str(tmp_path / "d.png")]) == 0
  assert cli.main(["sample", "--workdir", arm, "--num", "4", "--out", str(tmp_path / "a.png")]) == 0
  assert (tmp_path / "d.png").exists() and (tmp_path / "a.png").exists()
  capsys.readouterr()
  for argv in (
    ["policy", "--workdir", arm, "--budgets", "5"],
    ["eval", "--workdir", arm, "--budget", "5"],
    ["compress", "--workdir", d3pm, "--out", str(tmp_path / "c.ardm"), str(tmp_path / "a.png")],
  ):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("needs an ARDM" in err or "--budget must be D" in err), err
