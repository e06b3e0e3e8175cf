"""Training: the GRPO loop (`trainer`), its metrics, checkpoints, metric sinks and distribution strategies."""
