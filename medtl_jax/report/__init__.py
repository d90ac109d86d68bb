"""Study reports over a sweep folder (study_report, `python -m launch.report DIR`): collected runs, statistics,
(DeLong, bootstrap, Holm/BH), tables, figures. One run's report.md is written by the trainer (medtl_jax.train.run_report)."""
