"""TensorFlow Datasets access that never downloads behind the user's back.

Without network, `tfds.load(..., download=True)` hangs for minutes before failing. So the builder is checked
for prepared data first, and an unprepared dataset is a one-line error within seconds, unless the config asks
for the download explicitly (`data.download=True`).
"""

from __future__ import annotations

import os

import numpy as np


def import_tfds():
  try:
    # Imported here: tfds imports TensorFlow (seconds); only the tfds sources need it.
    import tensorflow_datasets as tfds  # noqa: PLC0415
  except ImportError as e:
    raise ValueError(
      f"tensorflow_datasets cannot be imported ({e}); pip install tensorflow-datasets "
      f"tensorflow-cpu, or use data.name='npz' with a local .npz"
    ) from None
  return tfds


def _data_dir(data_dir):
  return os.path.expanduser(str(data_dir)) if data_dir else None


def require_prepared(name: str, data_dir=None, download: bool = False):
  """Returns the builder of `name`; raises at once when its data is not prepared and download is False."""
  tfds = import_tfds()
  builder = tfds.builder(name, data_dir=_data_dir(data_dir))
  if builder.is_prepared():
    return builder
  if download:
    builder.download_and_prepare()
    return builder
  raise ValueError(
    f"tfds dataset {name!r} is not prepared (nothing at {builder.data_dir}); on a machine with internet run "
    f"`python -m tensorflow_datasets.scripts.download_and_prepare --datasets={name}` (or `tfds build {name}`) "
    f"and point --config.data.tfds_data_dir at that data folder, or set --config.data.download=True to "
    f"download now, or use data.name='npz' with a local .npz"
  )


def load_split_numpy(name: str, split: str, data_dir=None, key: str = "image") -> np.ndarray:
  """The whole split in memory as numpy (the data must be prepared; see `require_prepared`)."""
  tfds = import_tfds()
  arrays = tfds.as_numpy(tfds.load(name, split=split, data_dir=_data_dir(data_dir), batch_size=-1, download=False))
  return np.asarray(arrays[key])
