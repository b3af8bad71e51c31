"""Argument types for the command line: numbers checked while the arguments are parsed.

Each is an argparse ``type=`` callable. A bad value raises `argparse.ArgumentTypeError`, so argparse
stops with its usage and one line naming the flag, e.g.
``retina-fast prepare: error: argument --size: must be an integer >= 1, got '0'``, and exit status 2,
before any output is created.

    p.add_argument("--workers", type=positive_int)
    p.add_argument("--level", type=int_range(0, 9))
    p.add_argument("--img-snap", type=optional(nonnegative_int))      # also accepts 'none'
"""
import argparse
import math

__all__ = ["int_at_least", "int_range", "positive_int", "nonnegative_int", "finite_float", "float_range",
           "positive_float", "nonnegative_float", "probability", "optional"]


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_range(minimum=None, maximum=None):
    """Type of an integer in [`minimum`, `maximum`] (None: unbounded on that side)."""
    def parse(text):
        value = _int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if maximum is None:
                what = f">= {minimum}"
            elif minimum is None:
                what = f"<= {maximum}"
            else:
                what = f"in {minimum}..{maximum}"
            raise argparse.ArgumentTypeError(f"must be an integer {what}, got {text!r}")
        return value
    parse.__name__ = "int"
    return parse


def int_at_least(minimum):
    """Type of an integer >= `minimum`."""
    return int_range(minimum, None)


positive_int = int_at_least(1)
positive_int.__doc__ = "An integer >= 1."
nonnegative_int = int_at_least(0)
nonnegative_int.__doc__ = "An integer >= 0."


def finite_float(text):
    """A finite number (no nan, inf)."""
    return _float(text)


def float_range(minimum=None, maximum=None, *, min_open=False, max_open=False):
    """Type of a finite number in the interval from `minimum` to `maximum` (open ends as flagged)."""
    def parse(text):
        value = _float(text)
        low_bad = minimum is not None and (value <= minimum if min_open else value < minimum)
        high_bad = maximum is not None and (value >= maximum if max_open else value > maximum)
        if low_bad or high_bad:
            parts = []
            if minimum is not None:
                parts.append(f"{'>' if min_open else '>='} {minimum:g}")
            if maximum is not None:
                parts.append(f"{'<' if max_open else '<='} {maximum:g}")
            raise argparse.ArgumentTypeError(f"must be a number {' and '.join(parts)}, got {text!r}")
        return value
    parse.__name__ = "float"
    return parse


positive_float = float_range(0, min_open=True)
positive_float.__doc__ = "A finite number > 0."
nonnegative_float = float_range(0)
nonnegative_float.__doc__ = "A finite number >= 0."
probability = float_range(0, 1)
probability.__doc__ = "A number in [0, 1]."


def optional(kind):
    """Type that maps 'none' (any case) to None and anything else through `kind`."""
    def parse(text):
        return None if text.strip().lower() == "none" else kind(text)
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse
