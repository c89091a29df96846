"""Evaluation as tasks × methods: ``tasks/`` (grounding, mismatch, the 2×2 grid pointing game,
faithfulness) run any method of ``methods/`` (dualex, banzhaf, first-order maps) through one
interface; plus metrics, tables, per-class analysis and the Shapley cross-check."""
