"""vlm-grpo: GRPO fine-tuning of vision-language models, built around the cold-start problem."""

__version__ = "0.1.0"
