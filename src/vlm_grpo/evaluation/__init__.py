"""Evaluation: one scoring path (`records`), baseline assessment (`assess`), checkpoint evaluation
(`checkpoints`) and the study's decision framework (`decision`)."""
