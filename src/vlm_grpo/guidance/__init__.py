"""Guidance: remedies for groups without a learning signal, behind one seam (`remedy.py`): guidance
injection (`injection.py`), dynamic sampling (`dynamic_sampling.py`), supervised terms on
demonstrations (`sft.py`), the schedules they share (`schedules.py`), and the checks of the
demonstrations they write (`checks.py`)."""

from . import dynamic_sampling
from .checks import check_demonstrations, check_written_demonstrations, every_demonstration
from .dynamic_sampling import DynamicSampling
from .injection import (
    MODES,
    GuidanceInjection,
    Injector,
    Row,
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
    "check_demonstrations",
    "check_written_demonstrations",
    "dynamic_sampling",
    "every_demonstration",
    "prefix_ratio",
    "ramp_value",
    "register_remedy",
    "replace_rows",
    "rows_to_inject",
    "schedule_value",
    "sft_coef",
]
