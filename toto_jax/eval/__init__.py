"""Evaluation: metrics, baselines, rolling-window harness, the LSF protocol and a GluonTS adapter."""
