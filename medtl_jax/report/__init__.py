"""Human-readable reports: one run's report.md (run_report) and a sweep folder's study report
(study_report, `python -m launch.report DIR`)."""
