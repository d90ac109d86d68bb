"""The test suite: tests/<layer>/ holds the tests of medtl_jax/<layer>/ (tests/test_layers.py checks it),
tests/launch/ those of the launch/ entry points, tests/helpers/ what several tests share.

A package, so every test module has one unambiguous name (tests.<layer>.test_...) and `tests.helpers`
imports from the repository root however pytest is started there."""
