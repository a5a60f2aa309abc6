"""model.stage_input: an upscale network sees its stage, as the official networks' S one-hot mask channels."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny_nets import (
  TF_CFG,
  TF_K,
  TF_SHAPE,
  UNET_CFG,
  UNET_K,
  UNET_SHAPE,
  abstract_init,
  inputs,
  random_params,
)

from ardm_jax import configs, train_state
from ardm_jax.nets import build_network, layers

S_STAGES = 4
STAGE_NETS = {
  "unet": (UNET_CFG, UNET_SHAPE, UNET_K),
  "unet_numeric": (dict(UNET_CFG, input_numeric=True), UNET_SHAPE, UNET_K),
  "transformer": (TF_CFG, TF_SHAPE, TF_K),
  "diffwave": (dict(name="diffwave", num_blocks=2, features=16, dilation_cycle=2), (32,), 16),
}


def _stage_net(kind, num_stages=S_STAGES, **overrides):
  """The tiny `kind` network for global steps s * D + t over S_STAGES * D steps, told of num_stages stages (None:
  built as before model.stage_input existed)."""
  cfg, shape, k = STAGE_NETS[kind]
  sizes = dict(num_steps=S_STAGES * int(np.prod(shape)))
  if num_stages is not None:
    sizes["num_stages"] = num_stages
  return build_network(ml_collections.ConfigDict({**cfg, **overrides}), shape, k, **sizes), shape, k


def _time_embed_fed(net, variables, x_in, known, t_net, t_time=None):
  """The network's output for global steps t_net, and what its time embedding was fed (t_time instead of t_net
  when given, so that the time embedding cannot tell the stage), with that module's num_steps."""
  fed = []

  def time_input(next_fn, args, kwargs, context):
    if isinstance(context.module, layers.TimeEmbedding) and context.method_name == "__call__":
      args = (args[0] if t_time is None else t_time,) + args[1:]
      fed.append((args[0], context.module.num_steps))
    return next_fn(*args, **kwargs)

  with nn.intercept_methods(time_input):
    out = net.apply(variables, x_in, known, t_net)
  ((t_fed, num_steps),) = fed
  return out, t_fed, num_steps


@pytest.mark.parametrize("kind", list(STAGE_NETS))
def test_stage_input_output_depends_on_the_stage_beyond_the_time_embedding(kind):
  """Same items, mask and step within the stage, the time embedding held at that step: only the stage differs, and
  with model.stage_input the output still changes from each stage to every other (without it, it cannot)."""
  net, shape, k = _stage_net(kind, stage_input=True)
  variables = random_params(abstract_init(net, shape, k))
  x_in, known, t = inputs(shape, k)
  d = int(np.prod(shape))
  run = jax.jit(lambda t_net: _time_embed_fed(net, variables, x_in, known, t_net, t_time=t)[0])
  outs = [run(s * d + t) for s in range(S_STAGES)]
  for s in range(S_STAGES):
    for r in range(s):
      assert float(jnp.max(jnp.abs(outs[s] - outs[r]))) > 1e-4, (kind, r, s)


@pytest.mark.parametrize("kind", list(STAGE_NETS))
def test_stage_input_keeps_the_global_step_in_the_time_embedding(kind):
  """The stage channels come beside, not instead of, the time embedding: it is still fed the global step
  s * D + t over S * D steps, as without the option."""
  x_in, known, t = None, None, None
  for stage_input in (False, True):
    net, shape, k = _stage_net(kind, stage_input=stage_input)
    if x_in is None:
      x_in, known, t = inputs(shape, k)
    d = int(np.prod(shape))
    variables = random_params(abstract_init(net, shape, k))
    t_net = 3 * d + t
    _, t_fed, num_steps = jax.jit(lambda tn, net=net, v=variables: _time_embed_fed(net, v, x_in, known, tn))(t_net)
    np.testing.assert_array_equal(t_fed, t_net)
    assert num_steps == S_STAGES * d, (kind, stage_input, num_steps)


@pytest.mark.parametrize("kind", list(STAGE_NETS))
def test_config_without_stage_input_builds_the_same_network_as_before(kind):
  """A config written before model.stage_input existed (key missing), the key set False, and the key set True with
  one stage all build the network of the call before the option (no num_stages): the same annotated parameter
  tree, and for the missing key bit-identical outputs from the same parameters. With the key on and S > 1 only the
  input layer grows."""
  shape, k = STAGE_NETS[kind][1:]
  x_in, known, t = inputs(shape, k)
  t = t + 2 * int(np.prod(shape))
  shapes = lambda boxed: jax.tree.map(lambda a: a.shape, nn.unbox(boxed)["params"])

  before, missing = _stage_net(kind, num_stages=None)[0], _stage_net(kind)[0]
  boxed = abstract_init(before, shape, k)
  for net in (missing, _stage_net(kind, stage_input=False)[0], _stage_net(kind, num_stages=1, stage_input=True)[0]):
    other = abstract_init(net, shape, k)
    assert jax.tree.structure(other) == jax.tree.structure(boxed) and shapes(other) == shapes(boxed)
  variables = random_params(boxed)
  np.testing.assert_array_equal(
    jax.jit(missing.apply)(variables, x_in, known, t), jax.jit(before.apply)(variables, x_in, known, t)
  )

  shapes_on, shapes_off = shapes(abstract_init(_stage_net(kind, stage_input=True)[0], shape, k)), shapes(boxed)
  if kind == "transformer":
    assert shapes_on.pop("stage_embed") == {"embedding": (S_STAGES, TF_CFG["emb_dim"])}
  else:
    kernel_on, kernel_off = shapes_on["conv_in"].pop("kernel"), shapes_off["conv_in"].pop("kernel")
    assert kernel_on[-2] == kernel_off[-2] + S_STAGES
    assert kernel_on[:-2] + kernel_on[-1:] == kernel_off[:-2] + kernel_off[-1:]
  assert shapes_on == shapes_off


@pytest.mark.parametrize("name,stages", [("cifar10_upscale4", 4), ("sc09_upscale", 16), ("text8_upscale", 0)])
def test_paper_upscale_configs_feed_the_stage_and_their_old_config_files_still_load(name, stages):
  """The CIFAR-10 and SC09 upscale configs give conv_in S stage channels more than their config.json of a release
  before model.stage_input (key missing), which builds the old parameter tree; text8's official model has no
  stage input (its ids tell the stage), so its config leaves the key out."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = configs.load_config_file(os.path.join(repo, "experiments", f"{name}.py:tiny"))
  spec = train_state.spec_without_data(config)
  old = json.loads(config.to_json(sort_keys=True))
  assert old["model"].pop("stage_input", False) is bool(stages)

  def param_shapes(cfg):
    setup = train_state.build_setup(cfg, spec)
    assert setup.objective.num_stages == (stages or 2)
    return jax.tree.map(lambda a: a.shape, setup.abstract_state.params)

  new_shapes, old_shapes = param_shapes(config), param_shapes(ml_collections.ConfigDict(old))
  if stages:
    kernel_new, kernel_old = new_shapes["conv_in"].pop("kernel"), old_shapes["conv_in"].pop("kernel")
    assert kernel_new[-2] == kernel_old[-2] + stages
  assert new_shapes == old_shapes
