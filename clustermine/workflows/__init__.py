"""Workflows over a run: mine, re-mine, stability, what-if, compare, search, estimate, report, export, jobs, Ray."""
