"""benchmarks/throughput.py's FLOP accounting: the counting program drops remat (and scans / attention kernels),
and the hand count of a U-Net forward pass agrees with XLA's."""

import importlib.util
import os

import pytest

from ardm_jax import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark():
  spec = importlib.util.spec_from_file_location("throughput", os.path.join(REPO, "benchmarks", "throughput.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_counting_setup_is_one_device_without_remat():
  bench = _benchmark()
  config = configs.load_config_file(os.path.join(REPO, "experiments", "cifar10.py:tiny"))
  config.model.remat = True
  setup1 = bench.counting_setup(config, bench.spec_of(config))
  assert setup1.mesh.devices.size == 1
  assert setup1.net.remat in ("none", False)
  assert not getattr(setup1.net, "scan_layers", False)
  assert getattr(setup1.net, "attention_impl", "plain") == "plain"
  assert config.model.remat is True  # the timed config is left as it was


@pytest.mark.parametrize("name", ["digits.py:tiny", "cifar10.py:tiny"])  # embedding input; numeric input, 32x32
def test_unet_hand_count_is_within_10_percent_of_xla(name):
  bench = _benchmark()
  config = configs.load_config_file(os.path.join(REPO, "experiments", name))
  spec = bench.spec_of(config)
  setup1 = bench.counting_setup(config, spec)
  hand, xla = bench.unet_forward_flops(setup1.net, 2), bench.forward_flops_xla(setup1, spec, 2)
  # The hand count leaves out norms, activations and the softmax, so it is a little below XLA's.
  assert 0.9 * xla <= hand <= 1.001 * xla, (hand, xla)
