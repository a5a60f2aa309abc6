"""Lossless compression with an ARDM, without the network: NumPy and constriction only.

The network enters as one callable (see `walk.Predict`), so everything here can be tested exactly with toy
predictors and reused by any model. Import the submodule you use; nothing is re-exported here:

  orders          seeded orders sigma_s: a file stores a seed, never an order
  stages          what the walk needs of an upscale model's transitions (state tree, slots)
  entropy_models  how one step's variables become ANS symbols (quantised tables or binary splits)
  walk            the coding walk over a policy: encode backwards, decode forwards with the same calls
  container       the container's shared parts: errors, the parsed record, varints, CRCs, checks against a model
  packing         the header layouts of versions 1, 2 and 3 (compact): pack_container / unpack_container
  codec           compress / decompress in one call (walk + container)
  checks          argument checks and size limits shared by the modules above
"""
