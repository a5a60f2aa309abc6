"""Dependencies, in two senses.

Through gradients on the real networks: the loss never sees values at unknown positions. If a value v occurs only
at positions that are unknown at step t, its row of the input embedding table receives exactly zero gradient from
the ARDM loss: the network never looked it up. A leak (e.g. corrupting after the embedding, or forgetting to
corrupt) makes that gradient non-zero.

Through imports (the last tests): each `ardm` command imports only what it runs. A NumPy-only job (`ardm policy
--loss-file`) and `--help` import no JAX; the jobs on a trained workdir import no TensorFlow (only training's metric
writers and the tfds data sources need it). Checked in fresh interpreters.
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax import ardm
from ardm_jax.nets import build_network
from ardm_jax.train_state import make_apply_fn

NETS = {
  "unet": (dict(name="unet", ch=16, num_res_blocks=1, input_embed_dim=4), (4, 4, 2), 5, "input_embed"),
  "transformer": (dict(name="transformer", num_layers=1, emb_dim=32, mlp_dim=64, num_heads=2), (12,), 5, "token_embed"),
  # The official input layers: the U-Net's numeric branch, the text8 Transformer's inputs (no mask, no time).
  "unet_numeric": (
    dict(name="unet", ch=16, num_res_blocks=1, input_embed_dim=4, input_numeric=True),
    (4, 4, 2),
    5,
    "input_embed",
  ),
  "transformer_official": (
    dict(
      name="transformer",
      num_layers=1,
      emb_dim=32,
      mlp_dim=64,
      num_heads=2,
      positions="sinusoidal",
      time_input=False,
      mask_input=False,
    ),
    (12,),
    5,
    "token_embed",
  ),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_values_at_unknown_positions_get_no_gradient(name):
  cfg, shape, num_classes, table = NETS[name]
  net = build_network(ml_collections.ConfigDict(cfg), shape, num_classes)
  apply_fn = make_apply_fn(net)
  batch = 3
  d = int(np.prod(shape))
  rng = np.random.default_rng(0)
  hidden_value = num_classes - 1
  sigma = np.stack([rng.permutation(d) for _ in range(batch)]).astype(np.int32)
  t = np.array([d // 2, 1, d - 1], np.int32)
  known = sigma < t[:, None]
  # Known positions use values 0..K-2 only; the value K-1 appears only where the variable is unknown.
  x = np.where(known, rng.integers(0, num_classes - 1, (batch, d)), hidden_value).reshape((batch,) + shape)
  init = jax.jit(lambda key, *inputs: net.init({"params": key}, *inputs, train=False))
  params = nn.unbox(
    init(jax.random.PRNGKey(1), jnp.asarray(x), jnp.asarray(known.reshape(x.shape)), jnp.asarray(t))["params"]
  )
  # Break the zero-initialised output layers so that every path carries gradient.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

  # One compiled gradient serves both inputs, instead of two op-by-op gradient evaluations.
  @jax.jit
  @jax.grad
  def grad_of_loss(p, x_in):
    terms = ardm.elbo_terms_given(apply_fn, p, x_in, jnp.asarray(sigma), jnp.asarray(t), num_classes=num_classes)
    return jnp.sum(terms["nll"])

  grads = grad_of_loss(params, jnp.asarray(x))
  rows = np.asarray(grads[table]["embedding"])
  assert np.abs(rows[hidden_value]).max() == 0.0, "a value at an unknown position reached the network"
  assert np.abs(rows[num_classes]).max() > 0.0, "the absorbing class must carry the unknown positions"
  assert np.abs(rows[: num_classes - 1]).max() > 0.0
  # Control: the same value placed at a known position does receive gradient.
  x_leak = x.reshape(batch, d).copy()
  x_leak[0, np.flatnonzero(known[0])[0]] = hidden_value
  grads_leak = grad_of_loss(params, jnp.asarray(x_leak.reshape(x.shape)))
  assert np.abs(np.asarray(grads_leak[table]["embedding"])[hidden_value]).max() > 0.0


HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "clu", "sklearn")


def _modules_after(code: str, tmp_path) -> set[str]:
  """Top-level packages of the HEAVY list that a fresh interpreter has imported after running `code`."""
  probe = code + (
    f"\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
  out = subprocess.run(
    [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=True
  ).stdout
  return set(json.loads(out.strip().splitlines()[-1]))


def test_policy_from_a_loss_file_imports_no_jax(tmp_path):
  np.save(tmp_path / "lt.npy", np.linspace(3.0, 0.5, 256))
  code = (
    "from ardm_jax import cli\n"
    "assert cli.main(['policy', '--loss-file', 'lt.npy', '--budgets', '2,5,20', '--out', 'p.json']) == 0"
  )
  assert _modules_after(code, tmp_path) == set()
  assert (tmp_path / "p.json").is_file() and (tmp_path / "p.png").is_file()


def test_cli_parser_imports_no_jax(tmp_path):
  # The command list imports no job; a command's parser imports only its own job module (policy's: NumPy only).
  assert _modules_after("from ardm_jax import cli\ncli.build_parser()\ncli.build_parser('policy')", tmp_path) == set()


def test_jobs_on_a_workdir_import_no_tensorflow(tmp_path):
  code = (
    "from ardm_jax import cli, compile_cache, held_out, sample, workdir, checkpoint, data\n"
    "from ardm_jax import coding_model, compress\n"
    "coding_model.Predictor, coding_model.open_coding_model"
  )
  loaded = _modules_after(code, tmp_path)
  assert "jax" in loaded and not loaded & {"tensorflow", "tensorflow_datasets", "clu", "sklearn"}, loaded
