"""Where datasets come from: TFDS builders (MedMNIST, synthetic lesions, users' own data built by
launch.prepare_data) and image/mask folder readers (DRIVE, CHASE_DB1, ISBI 2012, the generic layout).
Each returns a `medtl_jax.data.types.DataBundle`.
"""
