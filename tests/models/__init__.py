"""Tests of medtl_jax/models/."""
