"""Grounding evaluation: metrics, first-order baselines, mismatch, per-class analysis, Shapley."""
