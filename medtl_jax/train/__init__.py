"""The trainer (`trainer`, read top to bottom: set-up, state, step, loop, evaluation, checkpoint), the
task-specific parts it is given (`classification_run`, `segmentation_run`), and one run's report.md.
"""
