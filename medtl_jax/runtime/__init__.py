"""Runtime: what every layer above may use. Atomic file writes, downloads that fail offline with a
fix, multi-process start-up, the device mesh and shardings, SIGTERM/Ctrl-C as a preemption notice, orbax
checkpoints, metric logs, the run folder's files and rules, and one-line errors for the command line.
Nothing here imports another medtl_jax layer.
"""
