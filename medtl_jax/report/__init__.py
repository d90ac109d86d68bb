"""Human-readable reports: one run's report.md now; sweep tables and plots later."""
