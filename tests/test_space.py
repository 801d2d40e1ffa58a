"""Search spaces: validation, encoding round trips, conditions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genetic_dl.space import Choice, Float, Int, default_space, space


@pytest.mark.parametrize("bad,message", [
    (lambda: Float(1.0, 1.0), "lo < hi"), (lambda: Float(0.0, 1.0, log=True), "lo > 0"),
    (lambda: Int(3, 2), "lo < hi"), (lambda: Int(-1, 5, log=True), "lo > 0"),
    (lambda: Choice([]), "at least one"), (lambda: Float(0, float("inf")), "finite"),
    (lambda: space({}), "at least one gene"),
    (lambda: space({"a": Int(1, 2)}, {"b": lambda c: True}), "unknown genes"),
])
def test_bad_genes_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1))
def test_decode_stays_in_range_and_encode_inverts(u):
    for gene in (Float(-2, 3), Float(1e-4, 1, log=True)):
        v = gene.decode(u)
        assert gene.lo - 1e-9 <= v <= gene.hi + 1e-9
        assert abs(gene.encode(v) - u) < 1e-9
    for gene in (Int(1, 7), Int(8, 256, log=True), Choice(("a", "b", "c"))):
        v = gene.decode(u)
        assert gene.decode(gene.encode(v)) == v


def test_int_and_choice_bins_are_equal():
    counts = np.bincount([Int(0, 4).decode(u) for u in np.linspace(0, 1, 10_001)], minlength=5)
    assert counts.min() > 1900 and counts.max() < 2100
    values = [Choice((1, 2, 3)).decode(u) for u in np.linspace(0, 0.999, 999)]
    assert values.count(1) == values.count(2) == values.count(3)


def test_default_space_conditions():
    s = default_space()
    u = np.full(s.dim, 0.5)
    u[s.index("family")] = 0.1  # mlp
    u[s.index("layers")] = 0.3  # 2 layers
    c = s.decode(u)
    assert c["family"] == "mlp" and c["layers"] == 2
    assert {"width_0", "width_1"} <= set(c) and "width_2" not in c and "rnn_cell" not in c
    u[s.index("family")] = 0.9  # rnn
    c = s.decode(u)
    assert "rnn_cell" in c and "layers" not in c and "width_0" not in c
    # inactive genes do not change the cache key
    v = u.copy()
    v[s.index("width_3")] = 0.01
    assert s.key(u) == s.key(v)
