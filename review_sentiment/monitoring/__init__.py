"""Monitoring: what a version is compared against, the drift statistics, the check's report."""
