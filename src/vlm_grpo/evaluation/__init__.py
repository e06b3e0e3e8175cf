"""Evaluation: one scoring path (`records`), baseline assessment (`assess`), the final evaluation of
checkpoints (`final_eval`) and the study's decision framework (`decision`)."""
