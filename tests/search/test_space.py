"""Search spaces: validation, encoding round trips, conditions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genetic_dl.search.space import Choice, Float, Int, default_space, space


@pytest.mark.parametrize("bad,message", [
    (lambda: Float(1.0, 1.0), "lo < hi"), (lambda: Float(0.0, 1.0, log=True), "lo > 0"),
    (lambda: Int(3, 2), "lo < hi"), (lambda: Int(-1, 5, log=True), "lo > 0"),
    (lambda: Choice([]), "at least one"), (lambda: Float(0, float("inf")), "finite"),
    (lambda: space({}), "at least one gene"),
    (lambda: Float(0, 1, step=0.0), "step must be positive"),
    (lambda: Float(1e-3, 1, log=True, step=0.1), "needs log=False"),
    (lambda: Int(1, 9, step=0), "positive integer"), (lambda: Int(1, 9, log=True, step=2), "log"),
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


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1))
def test_stepped_genes_decode_onto_their_grid_and_round_trip(u):
    for gene, grid in ((Float(-1.0, 1.0, step=0.25), np.arange(-1.0, 1.01, 0.25)),
                       (Float(0.0, 1.0, step=0.3), np.array([0.0, 0.3, 0.6, 0.9])),
                       (Int(2, 12, step=3), np.array([2, 5, 8, 11]))):
        v = gene.decode(u)
        assert np.isclose(grid, v).sum() == 1, (gene, v)
        assert gene.decode(gene.encode(v)) == v
    counts = np.bincount([Int(2, 12, step=3).decode(x) for x in np.linspace(0, 1, 4001)])
    assert sorted(counts[counts > 0]) == [1000, 1000, 1000, 1001]  # equal bins


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


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=17, max_size=17))
def test_a_narrowed_space_decodes_only_the_values_it_allows(u):
    narrow = {"optimizer": ["adam", "sgd"], "width": ["8", "24"], "layers": [2, 3],
              "learning_rate": ["1e-3", "1e-2"], "dropout": [0], "rnn_hidden": [32]}
    s = default_space(narrow=narrow)
    assert s.names == default_space().names  # same genome layout: genomes stay comparable
    c = s.decode(u)
    assert c["optimizer"] in ("adam", "sgd") and c["dropout"] == 0.0
    assert 1e-3 * (1 - 1e-6) <= c["learning_rate"] <= 1e-2 * (1 + 1e-6)
    if c["family"] != "rnn":
        assert c["layers"] in (2, 3)
        assert all(c[f"width_{i}"] in (8, 24) for i in range(c["layers"]))
    else:
        assert c["rnn_hidden"] == 32
    # encode/decode still invert on the narrowed genes
    assert s.decode(s.encode(c)) == c


@pytest.mark.parametrize("narrow,message", [
    ({"widht": [8]}, "unknown gene 'widht'"), ({"optimizer": ["lion"]}, "not among"),
    ({"width": ["a"]}, "not an integer"), ({"width": [1.5]}, "not an integer"),
    ({"batch_size": [0]}, "positive"), ({"learning_rate": [0, 1]}, "log-scale"),
    ({"layers": [1, 2, 3]}, "one value or two bounds"), ({"layers": [1, 6]}, "up to 4"),
])
def test_bad_narrowing_raises_a_clear_error(narrow, message):
    with pytest.raises(ValueError, match=message):
        default_space(narrow=narrow)


def test_separation_is_the_largest_gene_difference_a_differing_discrete_value_counting_one():
    s = space({"x": Float(0, 10), "lr": Float(1e-4, 1, log=True), "q": Float(0, 1, step=0.5),
               "n": Int(1, 8), "c": Choice(("a", "b")), "w": Int(8, 64)},
              {"w": lambda c: c["c"] == "b"})
    base = {"x": 5.0, "lr": 1e-2, "q": 0.5, "n": 3, "c": "a", "w": 16}
    coords = s.coordinates(s.encode(base))

    def gap(**change):
        return float(s.separation(coords, s.coordinates(s.encode({**base, **change})))[0, 0])
    assert gap() == 0.0
    assert np.isclose(gap(x=5.5), 0.05) and np.isclose(gap(x=5.5, lr=1e-1), 0.25)  # log scale
    assert gap(n=4) == gap(q=1.0) == gap(c="b") == 1.0  # "b" also makes w active
    assert gap(w=32) == 0.0  # an inactive gene does not count
    assert s.separation(coords, np.zeros((0, s.dim))).shape == (1, 0)
