"""Guidance: remedies for groups without a learning signal, behind one seam (`remedy.py`): guidance
injection (`injection.py`), dynamic sampling (`dynamic_sampling.py`), supervised terms on
demonstrations (`sft.py`), and the schedules they share (`schedules.py`)."""

from . import dynamic_sampling
from .dynamic_sampling import DynamicSampling
from .injection import (
    MODES,
    GuidanceInjection,
    Injector,
    Row,
    check_demonstrations,
    check_written_demonstrations,
    demonstration_overflow,
    replace_rows,
    rows_to_inject,
)
from .remedy import REMEDIES, PolicyOps, Remedy, RemedyKit, StepContext, build_remedies, register_remedy
from .schedules import SCHEDULES, Ramp, prefix_ratio, ramp_value, schedule_value, sft_coef
from .sft import SupervisedTerms

__all__ = [
    "DynamicSampling",
    "GuidanceInjection",
    "Injector",
    "MODES",
    "PolicyOps",
    "REMEDIES",
    "Remedy",
    "RemedyKit",
    "SCHEDULES",
    "Ramp",
    "Row",
    "StepContext",
    "SupervisedTerms",
    "build_remedies",
    "demonstration_overflow",
    "check_demonstrations",
    "check_written_demonstrations",
    "dynamic_sampling",
    "prefix_ratio",
    "ramp_value",
    "register_remedy",
    "replace_rows",
    "rows_to_inject",
    "schedule_value",
    "sft_coef",
]
