"""The config's one validation pass: every field's choices, ranges and paths checked before any work,
naming the config key.
"""
