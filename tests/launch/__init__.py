"""Tests of the launch/ entry points (their command lines and the files they write)."""
