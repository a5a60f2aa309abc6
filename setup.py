"""Installs the `ardm_jax` package and the `ardm` command."""

import setuptools

CORE = [
  "jax>=0.4.30",
  "flax>=0.10",
  "optax>=0.2.5",  # optax.tree.norm
  "orbax-checkpoint",
  "ml-collections",
  "clu",
  # clu's metric writers import TensorFlow and need the tensorboard package.
  "tensorflow-cpu; platform_machine == 'x86_64'",
  "tensorboard",
  "tensorflow-datasets",
  "importlib_resources",
  "numpy",
  # ml_dtypes 0.7.0's extension takes about 0.6 s to import (0.004 s for 0.6.0), and JAX imports it in every
  # command: on 2 cores that is a sixth of compressing one image. JAX and TensorFlow accept >=0.5.1.
  "ml_dtypes>=0.5.1,<0.7",
  "scipy>=1.12",  # isotonic_regression for L_t fits
  "scikit-learn",  # ships the embedded `digits` data set
  "pillow",
  "matplotlib",
  "constriction",
  "safetensors>=0.4",  # parameters of exported model folders (ardm_jax/model_dir.py)
]

setuptools.setup(
  name="ardm_jax",
  version="0.1.0",
  description="Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022) in JAX/Flax",
  long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
  long_description_content_type="text/markdown",
  packages=setuptools.find_packages(include=["ardm_jax", "ardm_jax.*"]),
  license="Apache-2.0",
  url="https://arxiv.org/abs/2110.02037",
  project_urls={
    "Paper": "https://arxiv.org/abs/2110.02037",
    "Official implementation": "https://github.com/google-research/google-research/tree/master/autoregressive_diffusion",
  },
  python_requires=">=3.10",
  install_requires=CORE,
  extras_require={
    # ruff pinned: its format is part of the tests; nbformat, nbclient and ipykernel run notebooks/tour.ipynb;
    # huggingface_hub for the test that reads the real module's settings (the other hub tests use a fake one)
    "test": ["pytest", "pytest-xdist", "ruff==0.17.6", "nbformat", "nbclient", "ipykernel", "huggingface_hub"],
    "hub": ["huggingface_hub"],  # ardm export --push, --model hf:ORG/NAME
    "tpu": ["jax[tpu]"],
    "gpu": ["jax[cuda12]"],
  },
  entry_points={"console_scripts": ["ardm=ardm_jax.cli:main"]},
)
