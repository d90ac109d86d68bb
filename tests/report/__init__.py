"""Tests of medtl_jax/report/."""
