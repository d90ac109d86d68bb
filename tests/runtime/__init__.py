"""Tests of medtl_jax/runtime/."""
