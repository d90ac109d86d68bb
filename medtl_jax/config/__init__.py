"""Configs: the arguments of a config or sweep file ('k=v' after its path; arguments) and the one
validation pass over a config (validate): every field's choices, ranges and paths checked before any work,
naming the config key.
"""
