"""Tests of medtl_jax/data/."""
