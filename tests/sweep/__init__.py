"""Tests of medtl_jax/sweep/."""
