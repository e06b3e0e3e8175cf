"""Guidance: remedies for groups without a learning signal, behind one seam (`remedy.py`): guidance
injection (`injection.py`), dynamic sampling (`dynamic_sampling.py`), supervised terms on
demonstrations (`sft.py`), on-policy distillation from a teacher (`distill.py`), the schedules they
share (`schedules.py`), and the checks of the demonstrations they write (`checks.py`)."""

from . import dynamic_sampling
from .checks import check_demonstrations, check_written_demonstrations, every_demonstration
from .distill import DistillConfig, OnPolicyDistillation
from .dynamic_sampling import DynamicSampling, DynamicSamplingConfig
from .injection import (
    MODES,
    GuidanceInjection,
    InjectionConfig,
    Injector,
    Row,
    replace_rows,
    rows_to_inject,
)
from .remedy import REMEDIES, PolicyOps, Remedy, RemedyKit, StepContext, build_remedies, register_remedy
from .schedules import SCHEDULES, scheduled
from .sft import SftConfig, SupervisedTerms

__all__ = [
    "DistillConfig",
    "DynamicSampling",
    "DynamicSamplingConfig",
    "GuidanceInjection",
    "InjectionConfig",
    "Injector",
    "MODES",
    "OnPolicyDistillation",
    "PolicyOps",
    "REMEDIES",
    "Remedy",
    "RemedyKit",
    "SCHEDULES",
    "Row",
    "StepContext",
    "SftConfig",
    "SupervisedTerms",
    "build_remedies",
    "check_demonstrations",
    "check_written_demonstrations",
    "dynamic_sampling",
    "every_demonstration",
    "register_remedy",
    "replace_rows",
    "rows_to_inject",
    "scheduled",
]
