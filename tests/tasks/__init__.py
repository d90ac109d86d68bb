"""Tests of medtl_jax/tasks/."""
