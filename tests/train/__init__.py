"""Tests of medtl_jax/train/."""
