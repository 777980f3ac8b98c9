"""airlock probe: pre-analysis of a model (prompt-injection fuzzing; the memorization audit in airlock.probe.memorization)."""
