"""Metrics, grouping, bootstrap, reports and plots."""
