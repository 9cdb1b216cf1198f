"""The prefix tree against a model of physical KV cells: random operations, exact counts."""

from __future__ import annotations

import itertools
import random

import pytest

from suite.inference.prefix_tree import Path, PrefixTree, common_prefix


class Model:
    """What llama.cpp would hold: per path, the id of the physical cell at each position."""

    def __init__(self, share: bool) -> None:
        self.share = share
        self.cells: dict[Path, list[int]] = {}
        self.tokens: dict[Path, list[int]] = {}
        self.ids = itertools.count()

    def attach(self, path: Path, source: Path, n: int) -> None:
        self.tokens[path] = self.tokens[source][:n]
        self.cells[path] = self.cells[source][:n] if self.share else [next(self.ids) for _ in range(n)]

    def extend(self, path: Path, tokens: list[int]) -> None:
        self.tokens.setdefault(path, []).extend(tokens)
        self.cells.setdefault(path, []).extend(next(self.ids) for _ in tokens)

    def truncate(self, path: Path, n: int) -> None:
        del self.tokens.setdefault(path, [])[n:]
        del self.cells.setdefault(path, [])[n:]

    def counts(self) -> tuple[int, int]:
        used = {c for cells in self.cells.values() for c in cells}
        live = {c for p, cells in self.cells.items() if p.running for c in cells}
        return len(used), len(used - live)


def check(tree: PrefixTree, model: Model, paths: list[Path]) -> None:
    assert (tree.cells, tree.cached) == model.counts()
    for p in paths:
        assert p.tokens() == model.tokens.get(p, [])
        assert p.length == len(model.tokens.get(p, []))


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_random_operations_keep_exact_counts(share, seed):
    rng = random.Random(seed)
    tree, model = PrefixTree(share), Model(share)
    paths = [Path(owner=i, running=rng.random() < 0.5) for i in range(6)]
    alphabet = [1, 2, 3]  # few token values: many shared prefixes, splits and duplicates
    for _ in range(400):
        p = rng.choice(paths)
        op = rng.random()
        if op < 0.35:
            tokens = [rng.choice(alphabet) for _ in range(rng.randint(1, 5))]
            tree.extend(p, tokens)
            model.extend(p, tokens)
        elif op < 0.55:
            n = rng.randint(0, p.length)
            tree.truncate(p, n)
            model.truncate(p, n)
        elif op < 0.7:
            tree.set_running(p, not p.running)
        elif op < 0.8:
            tree.clear(p)
            model.truncate(p, 0)
        else:  # take the best match of a random prompt from whoever holds it
            prompt = [rng.choice(alphabet) for _ in range(rng.randint(1, 12))]
            n, run = tree.match(prompt)
            best = max((common_prefix(model.tokens.get(q, []), prompt) for q in paths), default=0)
            assert n == best
            if n and p.length == 0:
                holders = tree.holders(run)
                assert holders and all(model.tokens[h][:n] == prompt[:n] for h in holders)
                if share:  # every holder holds the very same cells
                    assert len({tuple(model.cells[h][:n]) for h in holders}) == 1
                source = rng.choice(holders)
                tree.attach(p, source, n)
                model.attach(p, source, n)
        check(tree, model, paths)


def test_shared_prefix_is_counted_once_and_cached_when_its_holders_stop():
    tree = PrefixTree(share=True)
    a, b = Path("a", running=True), Path("b", running=True)
    tree.extend(a, list(range(100)))
    tree.attach(b, a, 80)
    tree.extend(b, [7, 7, 7])
    assert (tree.cells, tree.cached) == (103, 0)
    tree.set_running(a, False)  # a finished: its last 20 cells are only cached; 80 shared stay live
    assert tree.cached == 20
    tree.set_running(b, False)
    assert tree.cached == 103
    assert tree.match(list(range(90)) + [5]) == (90, a.end)
    n, run = tree.match(list(range(80)) + [7, 7])
    assert n == 82 and tree.holders(run) == [b]
    tree.clear(a)
    assert (tree.cells, tree.cached) == (83, 83)


def test_private_copies_are_counted_twice():
    tree = PrefixTree(share=False)
    a, b = Path("a", running=True), Path("b", running=True)
    tree.extend(a, [1, 2, 3, 4])
    tree.attach(b, a, 3)
    assert tree.cells == 7 and b.tokens() == [1, 2, 3]
    n, run = tree.match([1, 2, 3, 4, 5])
    assert n == 4 and tree.holders(run) == [a]


def test_common_prefix_finds_the_first_difference_past_a_chunk():
    a = list(range(300))
    b = a[:200] + [-1] + a[201:]
    assert common_prefix(a, b) == 200
    assert common_prefix(a, b, limit=150) == 150
    assert common_prefix(a[10:], b, offset=10) == 190
