"""Data sources. `load(config.data)` returns a dataset; `data.name` selects the source.

Every dataset has `name, kind ('image' | 'text'), shape, num_classes, alphabet, num_train_items`,
`train_batch(step, global_batch_size, seed, process_index=0, process_count=1) -> int32 [B // P, *shape]`,
`eval_items(split) -> int32 [N, *shape]`, `encode_text(str)`, `decode_text(ids)` (text only). Batching is a
pure function of (seed, step); see `ardm_jax.data.base`. Nothing is cached on disk.

Sources and their `config.data` keys (defaults in brackets):

  name='digits'      scikit-learn digits, (8, 8, 1), 17 classes; fixed split 1,497 train / 300 test. No keys.
  name='pydoc_text'  English prose of Python's pydoc topics on the text8 alphabet (27 classes), ~376k characters,
                     90/5/5 contiguous train/validation/test.  seq_len [256].
  name='text8'       path [required]: text8.zip, the unzipped text8 file, or a folder holding either
                     (http://mattmahoney.net/dc/text8.zip); 90M/5M/5M contiguous split.  seq_len [250].
  name='text_file'   path [required]: a UTF-8 / ASCII text file, 90/5/5 contiguous split.  seq_len [256];
                     normalise [True]: lowercase and turn every run of non a-z characters into one space;
                     False: a character outside the text8 alphabet is an error.
  name='npz'         path [required]: .npz of integer images, keys train_x/test_x (or x_train/x_test, optional
                     validation_x), or a single x/images array split 90/10 (fixed seed 0); (N, H, W) gets a channel
                     axis.  num_classes [256].
  name='png_folder'  path [required]: folder of equal-size 8-bit grayscale or RGB PNGs, name order, fixed 90/10
                     split (seed 0).  num_classes [256].
  name='cifar10'     tfds, (32, 32, 3), 256 classes, train/test.  tfds_data_dir [tfds default]; download [False].
  name='mnist'       tfds, (28, 28, 1), 256 classes, train/test.  tfds_data_dir [tfds default]; download [False].
  name='sc09'        tfds builder of the Speech Commands digits, (16000,), 65,536 classes, train/validation/test.
  name='wav_folder'  path [required]: 16-bit PCM mono WAVs (flat, or train/ and test/ subfolders).
  name='fsdd'        path [required]: fsdd_8khz.npz (Free Spoken Digit Dataset); train/test by take number.
                     The audio sources (kind 'audio') also take sample_rate [16000], length [sample_rate] and
                     bits [16]; see `ardm_jax.data.audio`.
  name='random'      uniform random items of a given kind, shape and num_classes (what `ardm preflight` trains
                     on instead of the real data); see `ardm_jax.data.synthetic`.

Text splits are 'train', 'validation', 'test'; image splits 'train', 'test' (plus 'validation' for an npz that
has one). Text training items are random crops; `eval_items` gives the non-overlapping chunks of a split.
"""

from __future__ import annotations

from ardm_jax.alphabets import TEXT8_ALPHABET
from ardm_jax.data.audio import load_fsdd, load_sc09, load_wav_folder
from ardm_jax.data.base import ArrayDataset, Dataset, SequenceDataset, cfg_get
from ardm_jax.data.embedded import load_digits, load_pydoc_text
from ardm_jax.data.images import load_npz, load_png_folder, load_tfds_images
from ardm_jax.data.synthetic import load_random
from ardm_jax.data.text import load_text8, load_text_file, normalise_text

SOURCES = {
  "digits": load_digits,
  "pydoc_text": load_pydoc_text,
  "text8": load_text8,
  "text_file": load_text_file,
  "npz": load_npz,
  "png_folder": load_png_folder,
  "cifar10": lambda cfg: load_tfds_images(cfg, "cifar10"),
  "mnist": lambda cfg: load_tfds_images(cfg, "mnist"),
  "sc09": load_sc09,
  "wav_folder": load_wav_folder,
  "fsdd": load_fsdd,
  "random": load_random,
}


def load(data_cfg) -> Dataset:
  """The dataset selected by `data_cfg.name` (an ml_collections.ConfigDict or a dict)."""
  name = cfg_get(data_cfg, "name")
  if name not in SOURCES:
    raise ValueError(f"unknown data.name {name!r}; choose one of {sorted(SOURCES)}")
  return SOURCES[name](data_cfg)


__all__ = ["ArrayDataset", "Dataset", "SequenceDataset", "SOURCES", "TEXT8_ALPHABET", "load", "normalise_text"]
