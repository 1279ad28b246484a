import pytest

from sparsify.errors import UsageError
from sparsify.pattern import parse_pattern


@pytest.mark.parametrize("text,n,m", [("2:4", 2, 4), ("1:2", 1, 2), ("4:8", 4, 8), ("2:8", 2, 8), (" 3 : 16 ", 3, 16)])
def test_valid_patterns(text, n, m):
    p = parse_pattern(text)
    assert (p.n, p.m) == (n, m)
    assert str(p) == f"{n}:{m}"


@pytest.mark.parametrize("text", ["", "2", "2:2", "4:2", "0:4", "2:4:8", "a:b", "-1:4", "2/4", "2:0", "1:100"])
def test_invalid_patterns(text):
    with pytest.raises(UsageError):
        parse_pattern(text)


def test_pattern_facts():
    p = parse_pattern("2:4")
    assert p.metadata_bits == 2 and p.density == 0.5 and p.hardware_supported
    assert not parse_pattern("2:8").hardware_supported  # the storage bytes: tests/unit/report/test_totals.py
