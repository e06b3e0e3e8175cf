import os

import pytest
import torch

# Two pytest workers share two cores: one thread each keeps them from fighting.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Qwen2-VL saved as a standard HF folder."""
    from vlm_grpo.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "qwen2-vl", family="qwen2-vl")
