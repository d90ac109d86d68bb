"""Tests of medtl_jax/inference/."""
