"""The shared Wilson interval: hand-computed values, the edges, n = 0 and bad counts."""

from __future__ import annotations

import pytest

from prefopt.stats import wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (50, 100, 0.4038, 0.5962),
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),  # z²/(n + z²) = 3.8415 / 13.8415
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_hand_computed(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)
    assert got[0] <= successes / n <= got[1]


def test_wilson_interval_known_value():
    """p = 0.6, n = 200, z = 1.96: center = (0.6 + z²/400) / (1 + z²/200) = 0.598115,
    half = z·sqrt(0.0012 + z²/160000) / (1 + z²/200) = 0.067281 -> (0.53084, 0.66539)."""
    assert wilson_interval(120, 200) == pytest.approx((0.53084, 0.66539), abs=1e-5)


def test_wilson_interval_at_n_zero_is_the_limit_of_the_formula():
    """As n -> 0 the centre tends to (z²/2n)/(z²/n) = 1/2 and the half-width to 1/2: (0, 1), finite."""
    assert wilson_interval(0, 0) == (0.0, 1.0)
    tiny = 1e-9  # the formula itself, evaluated at a vanishing n with p = 0
    centre, half = (0.0 + 1.96**2 / (2 * tiny)) / (1 + 1.96**2 / tiny), 0.5
    assert centre == pytest.approx(half, abs=1e-6)


def test_wilson_interval_edges():
    for n in (1, 7, 1000):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    narrow, wide = wilson_interval(500, 1000), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


@pytest.mark.parametrize(("successes", "n"), [(-1, 3), (4, 3), (0, -1)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(successes, n)
