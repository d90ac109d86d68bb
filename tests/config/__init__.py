"""Tests of medtl_jax/config/."""
