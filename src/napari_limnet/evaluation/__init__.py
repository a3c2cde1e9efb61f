"""Simulated-click evaluation of LIM-Net and baselines (``limnet eval``)."""

from ..clicks import SimClick, dice, first_click, next_click
from .methods import METHODS, MethodContext
from .protocol import noc, object_metrics
from .runner import Case, evaluate, find_cases

__all__ = [
    "METHODS", "Case", "MethodContext", "SimClick", "dice", "evaluate", "find_cases", "first_click",
    "next_click", "noc", "object_metrics",
]
