"""The arguments of ``scheduled_pruning`` (transform.py), checked on the host before anything is traced."""
from __future__ import annotations

import math

from jaxsparse.pruning.schedule import Schedule
from jaxsparse.pruning.selection import compile_pattern
from jaxsparse.pruning.state import REPORTS
from jaxsparse.pruning.structure import parse_structure

SCOPES = ("global", "layerwise")


def check_arguments(schedule, total_steps, scope, structure, include, exclude, score, min_density, report):
    """The n:m pair of ``structure`` (or None), after checking every argument (ValueError/TypeError)."""
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule={schedule!r} must be a jaxsparse.pruning.Schedule")
    schedule.check_fits(total_steps)
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is unknown; allowed: {', '.join(SCOPES)}")
    if score is not None and not callable(score):
        raise TypeError(f"score={score!r} must be a function (params, updates, **extra_args) -> scores")
    nm = parse_structure(structure)
    if nm is not None and not math.isclose(schedule.final_sparsity, 1 - nm[0] / nm[1], abs_tol=1e-6):
        raise ValueError(
            f"structure={structure!r} keeps {nm[0]} of {nm[1]}, so schedule.final_sparsity must be "
            f"{1 - nm[0] / nm[1]} (got {schedule.final_sparsity})")
    if min_density is not None:
        top = 1 - schedule.final_sparsity
        if scope != "global" or nm is not None:
            raise ValueError(f"min_density={min_density!r} applies to scope='global' without structure "
                             f"(got scope={scope!r}, structure={structure!r})")
        if isinstance(min_density, bool) or not isinstance(min_density, (int, float)) \
                or not 0 <= min_density <= top + 1e-12:
            raise ValueError(f"min_density={min_density!r} must be a number in [0, {top:g}] "
                             "(at most the final density 1 - schedule.final_sparsity)")
    compile_pattern("include", include)
    compile_pattern("exclude", exclude)
    if report not in REPORTS:
        raise ValueError(f"report={report!r} is unknown; allowed: {', '.join(REPORTS)}")
    return nm
