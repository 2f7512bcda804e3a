"""Metric functions; each returns a MetricResult (metric groups plus the alignment used)."""
