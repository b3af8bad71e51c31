"""Argument checks for the Python API: one line naming the argument, raised before any work starts.

`retina_fast.cli_types` checks the same kinds of numbers while the command line is parsed; these
check the values that Python callers pass to functions and constructors::

    batch_size = check_int("batch_size", batch_size, minimum=1)
    p = check_number("p", p, minimum=0, maximum=1)

A value of the wrong type (a float, a string, a bool for an integer) raises `ArgumentTypeError`, which
is both a ValueError (what the command line reports as a usage error) and a TypeError (what Python
raises for a wrong type); a value out of range raises ValueError.
"""
import math

import numpy as np

__all__ = ["ArgumentTypeError", "check_int", "check_number"]


class ArgumentTypeError(ValueError, TypeError):
    """An argument of the wrong type: catchable as ValueError and as TypeError."""


def _bounds(minimum, maximum, min_open=False, max_open=False):
    if minimum is not None and maximum is not None and not (min_open or max_open):
        return f" in {minimum}..{maximum}"
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if min_open else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"{'<' if max_open else '<='} {maximum}")
    return (" " + " and ".join(parts)) if parts else ""


def check_int(name, value, minimum=None, maximum=None, *, allow_none=False):
    """`value` as a Python int, checked to be an integer in [`minimum`, `maximum`].

    Parameters
    ----------
    name : str
        The argument's name, first word of the error message.
    value : int or numpy integer
        Bools are refused (``True`` is not a count).
    minimum, maximum : int, optional
        Inclusive bounds; None leaves that side open.
    allow_none : bool
        Pass None through unchanged.

    Returns
    -------
    int or None

    Raises
    ------
    ArgumentTypeError
        `value` is not an integer, e.g. ``"batch_size must be an integer >= 1, got 2.5"``.
    ValueError
        `value` is out of range, e.g. ``"batch_size must be an integer >= 1, got 0"``.
    """
    if value is None and allow_none:
        return None
    what = f"{name} must be {'None or ' if allow_none else ''}an integer{_bounds(minimum, maximum)}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(what)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(what)
    return int(value)


def check_number(name, value, minimum=None, maximum=None, *, min_open=False, max_open=False,
                 allow_none=False):
    """`value` as a Python float, checked to be a finite number between `minimum` and `maximum`.

    Parameters
    ----------
    name : str
        The argument's name, first word of the error message.
    value : int, float or numpy number
        Bools, NaN and infinities are refused.
    minimum, maximum : float, optional
        Bounds; None leaves that side open.
    min_open, max_open : bool
        Exclude the bound itself (``minimum=0, min_open=True``: a positive number).
    allow_none : bool
        Pass None through unchanged.

    Returns
    -------
    float or None

    Raises
    ------
    ArgumentTypeError
        `value` is not a number, e.g. ``"lr must be a finite number > 0, got '1e-3'"``.
    ValueError
        `value` is not finite or out of range.
    """
    if value is None and allow_none:
        return None
    what = (f"{name} must be {'None or ' if allow_none else ''}a finite number"
            f"{_bounds(minimum, maximum, min_open, max_open)}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(what)
    v = float(value)
    if (not math.isfinite(v) or (minimum is not None and (v <= minimum if min_open else v < minimum))
            or (maximum is not None and (v >= maximum if max_open else v > maximum))):
        raise ValueError(what)
    return v
