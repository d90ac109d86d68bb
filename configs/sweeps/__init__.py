"""Sweep presets for `python -m launch.sweep --sweep configs/sweeps/<file>.py[:args] --workdir DIR`.

Each file defines `get_sweep(arg) -> medtl_jax.sweep.Sweep`: transfer_study.py (model x init x data
fraction x seed, imbalance strategies, cross-site) and medmnist_v2.py (the MedMNIST v2 protocol next to
ImageNet transfer).
"""
