"""Tests of medtl_jax/weights/."""
