"""Core: GRPO math (pure tensor functions) and small statistics helpers; imports no model, data or trainer code."""
