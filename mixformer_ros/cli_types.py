"""argparse types shared by the command-line tools: a bad number is a usage error (exit code 2)
that names the option, never a traceback from deep inside the run."""

from __future__ import annotations

import argparse
import math


def _number(kind, check, requirement: str):
    def parse(text: str):
        value = kind(text)
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type when kind() itself refuses the text
    return parse


def _noun(kind) -> str:
    return "a whole number" if kind is int else "a finite number"


def positive(kind):
    """A finite number of ``kind`` (int or float) above zero."""
    return _number(kind, lambda v: v > 0, f"{_noun(kind)} > 0")


def non_negative(kind):
    """A finite number of ``kind`` at or above zero."""
    return _number(kind, lambda v: v >= 0, f"{_noun(kind)} >= 0")


def fraction():
    """A float in (0, 1]: a share of something, where none at all means nothing would happen."""
    return _number(float, lambda v: 0 < v <= 1, "in (0, 1]")


def within(kind, low, high):
    """A number of ``kind`` in [low, high]."""
    return _number(kind, lambda v: low <= v <= high, f"in [{low:g}, {high:g}]")
