"""FP-growth against brute-force enumeration."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsdistill.methods.mirage.fpgrowth import TooManyItemsets, fpgrowth


def brute(transactions, min_support, max_size=0):
    sets = [set(t) for t in transactions]
    items = sorted(set().union(*sets)) if sets else []
    out = {}
    for k in range(1, (max_size or len(items)) + 1):
        for combo in combinations(items, k):
            s = sum(1 for t in sets if set(combo) <= t)
            if s >= min_support:
                out[combo] = s
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), max_size=6), max_size=12), st.integers(1, 4), st.integers(0, 3))
def test_matches_brute_force(transactions, min_support, max_size):
    assert fpgrowth(transactions, min_support, max_size=max_size) == brute(transactions, min_support, max_size)


def test_limit_and_bad_threshold():
    transactions = [list(range(12))] * 3
    with pytest.raises(TooManyItemsets):
        fpgrowth(transactions, 2, limit=100)
    with pytest.raises(ValueError):
        fpgrowth(transactions, 0)
