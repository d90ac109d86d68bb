"""Tests of medtl_jax/transfer/."""
