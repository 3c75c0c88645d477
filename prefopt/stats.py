"""Shared statistics: the Wilson score interval of a binomial proportion.

Used for held-out accuracy (:mod:`prefopt.evaluate.accuracy`) and CDR label agreement
(:mod:`prefopt.annotate.cdr`), so both report the same interval for the same counts.
"""

from __future__ import annotations

import math

#: The two-sided 95% standard-normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (Wilson 1927, JASA 22:209).

    ``(p + z^2/2n -+ z * sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = successes / n``.
    For ``n = 0`` it is ``(0, 1)``: the limit of the formula as ``n -> 0`` (no data rules out no
    proportion), and a finite value that JSON reports can hold. The bounds are clipped to
    ``[0, 1]`` and always contain ``p`` (float rounding could otherwise put ``p`` a hair outside).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
