"""vlm-grpo: GRPO fine-tuning of vision-language models, built around the cold-start problem.

`from vlm_grpo import GRPOConfig, GRPOTrainer` is the Python API, shaped like TRL's (`vlm_grpo.api`).
"""

import importlib

__version__ = "0.1.0"
__all__ = ["GRPOConfig", "GRPOTrainer", "__version__"]


def __getattr__(name: str):
    # Loaded on first use: `import vlm_grpo` (the CLI's start, the plug-in hook) stays free of torch
    # and transformers, which the API's module imports.
    if name in ("GRPOConfig", "GRPOTrainer"):
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
