"""Hypothesis settings shared by the fuzz modules (``test_fuzz_*.py``).

The normal suite runs a bounded, derandomized number of examples so that CI is
deterministic and fast; ``APP_SERVER_FUZZ_EXAMPLES=20000`` raises the count
and draws fresh random examples on every run (what a fuzzing session wants).
A crash found either way is pinned as a plain regression test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_DEEP = int(os.environ.get("APP_SERVER_FUZZ_EXAMPLES", "0") or 0)


def fuzz(examples: int = 150) -> settings:
    """Settings for one property: ``examples`` in the suite, more when asked."""
    return settings(
        max_examples=_DEEP or examples,
        # A shared, noisy machine: time limits per example would be flaky.
        deadline=None,
        derandomize=not _DEEP,
        database=None,
        # Building a near-valid request or a frame stream is slow for
        # Hypothesis's taste; that is the generator, not the code under test.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
