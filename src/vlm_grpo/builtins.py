"""The package's own configuration sections and checks, registered by the modules that own them: the
remedies (`guidance/`: injection, sft, dynamic_sampling, distill), the rollout engines (`rollout/engines/`: vllm),
tool use (`training/tool_use.py`: tools), video samples (`data/videos.py`: video), and the registries whose
names a config takes (loss_type, scale_rewards, prompt.style, rollout_engine, remedies).
`config_sections.sections()` imports this module before it lists the sections, as the plug-in hook loads
a plug-in; nothing else imports it.
"""

from .data import videos  # noqa: F401  (video)
from .guidance import REMEDIES  # noqa: F401  (injection, sft, dynamic_sampling, distill and the remedies check)
from .rollout.engines import ENGINES  # noqa: F401  (vllm, rollout_engine)
from .training import tool_use  # noqa: F401  (tools)
