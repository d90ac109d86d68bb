"""The trainer (`trainer`, read top to bottom: set-up, state, step, loop, evaluation, checkpoint), the
task-family parts it is given (`run_parts`; built by `classification_run` / `segmentation_run`, chosen in
`families`), and one run's report.md (`run_report`).
"""
