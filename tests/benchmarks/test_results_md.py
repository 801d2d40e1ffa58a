"""benchmarks/RESULTS.md is what benchmarks/results_md.py makes of the JSON in benchmarks/results/.

The committed document must pass ``--check``, and every JSON value a generated block reads must
matter: changing it (by a margin that survives rounding) must change the block, so that
``--check`` fails. Which values a block reads is logged by handing it the JSON wrapped in
containers that record every leaf it takes out.
"""
import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_module():
    spec = importlib.util.spec_from_file_location("results_md", ROOT / "benchmarks" /
                                                  "results_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_md = _load_module()


class _Dict(dict):
    """A JSON object that logs the path of every leaf read out of it."""

    def __init__(self, data, path, log):
        super().__init__(data)
        self._path, self._log = path, log

    def __getitem__(self, key):
        return _wrap(super().__getitem__(key), self._path + (key,), self._log)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def values(self):
        return [self[k] for k in self.keys()]


class _List(list):
    """A JSON array that logs the path of every leaf read out of it."""

    def __init__(self, data, path, log):
        super().__init__(data)
        self._path, self._log = path, log

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = i + len(self) if i < 0 else i
        return _wrap(super().__getitem__(i), self._path + (i,), self._log)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _wrap(value, path, log):
    if isinstance(value, dict):
        return _Dict(value, path, log)
    if isinstance(value, list):
        return _List(value, path, log)
    log.add(path)
    return value


def _is_number_text(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _perturbations(value):
    """Changes of a leaf that survive any rounding the document uses; several, so that a value
    read through an order statistic (median, min, max) is moved past it at least once."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [int(round(value * 1.37 + 0.731)) + (value == 0), value + 10_000,
                value - 10_000]
    if isinstance(value, float):
        return [value * 1.37 + 0.731, value + 1e4, value - 1e4]
    if isinstance(value, str) and _is_number_text(value):
        return [str(round(float(value) * 1.37 + 0.731, 3))]
    return []


def _get(container, path):
    for key in path:
        container = container[key]
    return container


@pytest.fixture(scope="module")
def results():
    return results_md.load_results()


@pytest.fixture(scope="module")
def reads(results):
    """Block name -> the leaf paths (into ``results``) that its renderer reads."""
    out = {}
    for name in results_md.BLOCKS:
        log = set()
        wrapped = {k: _wrap(v, (k,), log) for k, v in results.items()}
        results_md.render_blocks(wrapped, [name])
        out[name] = log
    return out


def test_committed_results_md_is_what_the_json_gives(results):
    text = results_md.RESULTS_MD.read_text(encoding="utf-8")
    new = results_md.render(text, results)
    assert new == text, results_md.diff(text, new)
    assert results_md.main(["--check"]) == 0


def test_check_fails_on_a_changed_document(tmp_path, capsys):
    text = results_md.RESULTS_MD.read_text(encoding="utf-8")
    changed = tmp_path / "RESULTS.md"
    changed.write_text(text.replace("| 8 | 611 |", "| 8 | 612 |", 1), encoding="utf-8")
    assert results_md.main(["--check", "--markdown", str(changed)]) == 1
    assert "+| 8 | 611 |" in capsys.readouterr().out
    assert results_md.main(["--markdown", str(changed)]) == 0
    assert changed.read_text(encoding="utf-8") == text


def test_every_json_value_a_block_reads_changes_the_block(results, reads):
    """Each numeric leaf (numbers, booleans, numbers written as text) that a block reads is
    changed in place, the blocks that read it are rendered again, and one of them must differ
    (a renderer that raises on the changed value counts too: ``--check`` then fails)."""
    baseline = results_md.render_blocks(results)
    readers = {}
    for name, paths in reads.items():
        for path in paths:
            readers.setdefault(path, []).append(name)
    checked, raised, silent = 0, 0, []
    for path, names in readers.items():
        parent, key = _get(results, path[:-1]), path[-1]
        original = parent[key]
        changes = _perturbations(original)
        if not changes:
            continue
        checked += 1
        detected = False
        for value in changes:
            parent[key] = value
            try:
                detected = any(results_md.render_blocks(results, [n])[n] != baseline[n]
                               for n in names)
            except (ArithmeticError, KeyError, IndexError, TypeError, ValueError):
                detected, raised = True, raised + 1
            finally:
                parent[key] = original
            if detected:
                break
        if not detected:
            silent.append((path, names))
    assert not silent, f"values read but not shown by any block: {silent[:10]}"
    assert checked > 3000, checked
    assert raised < checked / 10, (raised, checked)
    assert results_md.render_blocks(results) == baseline


def test_every_block_reads_its_json(reads):
    assert all(reads.values()), [n for n, r in reads.items() if not r]


def test_blackbox_pairs_match_the_scripts_paired(results):
    """The paired differences RESULTS computes from the black-box runs equal the ones
    blackbox.py stored (scipy's t quantile, numpy's std) where both exist."""
    stored = results["blackbox"]["paired"]
    pairs = results_md.blackbox_pairs(
        results, sorted({tuple(k.split("@")[0].split("-")) for k in stored}))
    compared = 0
    for (a, b, n), (mean, half) in pairs.items():
        key = f"{a}-{b}@{n}"
        if key in stored:
            assert math.isclose(mean, stored[key]["mean"], rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(half, stored[key]["ci95"], rel_tol=1e-9)
            compared += 1
    assert compared >= 20


@pytest.mark.parametrize("n,expected", [(2, 12.706204736174704), (3, 4.302652729911275),
                                        (5, 2.7764451051977987), (10, 2.2621571627409915),
                                        (31, 2.0422724563012373)])
def test_t95_is_students_quantile(n, expected):
    assert math.isclose(results_md.t95(n), expected, rel_tol=1e-9)


def test_a_target_missed_by_rounding_is_not_rounded_up():
    assert results_md.vs(0.8978, 0.9) == "0.898"
    assert results_md.vs(0.93, 0.9) == "0.93"
    assert results_md.vs(0.94999, 0.95, 3) == "0.94999"
    assert results_md.vs(1.2999, 1.3) == "1.2999"


def test_fill_refuses_unknown_missing_and_repeated_markers():
    block = "<!-- results_md: a -->\nold\n<!-- /results_md: a -->"
    assert results_md.fill(f"x\n{block}\ny", {"a": "new"}) == \
        "x\n<!-- results_md: a -->\nnew\n<!-- /results_md: a -->\ny"
    for text, blocks in ((block, {}), (block, {"a": "1", "b": "2"}),
                         (block + "\n" + block, {"a": "1"})):
        with pytest.raises(ValueError):
            results_md.fill(text, blocks)
