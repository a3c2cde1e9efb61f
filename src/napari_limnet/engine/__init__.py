"""The interactive engine: numpy in, numpy out, no Qt."""

from .session import Click, RoundTiming, RoundUpdate, Session

__all__ = ["Click", "RoundTiming", "RoundUpdate", "Session"]
