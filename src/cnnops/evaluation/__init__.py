"""Scoring a model on its test split: metrics, error analysis, plots, baselines, the paired
evidence and the canaries."""
