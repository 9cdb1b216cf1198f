"""What the batched engine's KV cache holds, as a radix tree of token runs (no llama.cpp here).

Every sequence id of the engine's context holds the KV cells of one token path (positions
0..n-1): a ``Path`` in this tree. A ``Run`` is a stretch of consecutive positions whose cells are
*the same physical cells* for every path through it: ``llama_memory_seq_cp`` shares cells in a
unified KV cache, so a path that took another's first m cells shares the runs up to m (split there
if needed) and its own later tokens start a new run below. In a cache with one stream per sequence
(``share=False``) nothing is shared: a copy is a private run of its own.

The tree answers the engine's three questions in time proportional to the prompt:
- the longest prefix of a prompt whose cells some path holds (``match``; a trie walk, children by
  first token), and which paths hold it (``holders``);
- how many cells are in use (``cells``) and how many of them no running sequence holds (``cached``:
  the prefix cache's share of the KV cache);
- what a path holds after it grew, was cut back or dropped (``extend``, ``truncate``, ``clear``).
"""

from __future__ import annotations

CHUNK = 64  # tokens compared per slice when looking for the first difference


class Run:
    """Consecutive KV cells (positions ``start``..``start + len(tokens) - 1``) held by the same paths."""

    __slots__ = ("children", "ends", "live", "parent", "refs", "start", "tokens")

    def __init__(self, tokens: list[int], start: int, parent: Run | None) -> None:
        self.tokens = tokens
        self.start = start
        self.parent = parent
        self.children: dict[int, list[Run]] = {}
        self.ends: set[Path] = set()  # paths whose last cell is this run's last
        self.refs = 0  # paths through this run
        self.live = 0  # running paths through this run

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)

    def chain(self):
        """This run and its ancestors, deepest first."""
        run = self
        while run is not None and run.parent is not None:
            yield run
            run = run.parent


class Path:
    """The cells one sequence id holds: the runs from the root down to ``end``."""

    __slots__ = ("end", "length", "owner", "running")

    def __init__(self, owner: object, running: bool = False) -> None:
        self.owner = owner
        self.end: Run | None = None
        self.length = 0
        self.running = running

    def tokens(self) -> list[int]:
        """The tokens whose cells this path holds, in position order."""
        runs = list(self.end.chain()) if self.end is not None else []
        return [t for run in reversed(runs) for t in run.tokens]


def common_prefix(a: list[int], b: list[int], offset: int = 0, limit: int | None = None) -> int:
    """The length of the longest common prefix of ``a`` and ``b[offset:limit]``."""
    n = min(len(a), (len(b) if limit is None else min(limit, len(b))) - offset)
    if n <= 0:
        return 0
    if a[:n] == b[offset:offset + n]:
        return n
    i = 0
    while i + CHUNK <= n and a[i:i + CHUNK] == b[offset + i:offset + i + CHUNK]:
        i += CHUNK
    while i < n and a[i] == b[offset + i]:
        i += 1
    return i


class PrefixTree:
    """The runs of the KV cache; ``share``: copies share cells (unified cache) or duplicate them."""

    def __init__(self, share: bool = True) -> None:
        self.share = share
        self.root = Run([], 0, None)
        self.cells = 0  # distinct cells held by some path
        self.cached = 0  # of those, cells no running path holds

    # -- lookups ----------------------------------------------------------------------------------
    def match(self, tokens: list[int], limit: int | None = None) -> tuple[int, Run | None]:
        """The longest prefix of ``tokens[:limit]`` whose cells some path holds: its length and the
        run holding its last cell (None when nothing matches)."""
        limit = len(tokens) if limit is None else min(limit, len(tokens))
        best: tuple[int, Run | None] = (0, None)
        todo = [(self.root, 0)]
        while todo:
            parent, pos = todo.pop()
            if pos >= limit:
                continue
            for run in parent.children.get(tokens[pos], ()):
                k = common_prefix(run.tokens, tokens, pos, limit)
                if pos + k > best[0]:
                    best = (pos + k, run)
                if k == len(run.tokens):
                    todo.append((run, pos + k))
        return best

    def holders(self, run: Run) -> list[Path]:
        """Every path through ``run`` (each holds all cells up to the run's end)."""
        out: list[Path] = []
        todo = [run]
        while todo:
            r = todo.pop()
            out.extend(r.ends)
            for alternatives in r.children.values():
                todo.extend(alternatives)
        return out

    # -- changes ----------------------------------------------------------------------------------
    def attach(self, path: Path, source: Path, length: int) -> None:
        """An empty ``path`` now holds ``source``'s first ``length`` cells (shared, or a private copy)."""
        if path.end is not None:
            raise ValueError("attach needs an empty path")
        if not 0 < length <= source.length:
            raise ValueError(f"cannot take {length} cells of a path of {source.length}")
        if not self.share:
            self.extend(path, source.tokens()[:length])
            return
        run = self._run_at(source, length)
        self._hold(path, run)

    def extend(self, path: Path, tokens: list[int]) -> None:
        """``path`` decoded ``tokens`` after its last cell (new cells)."""
        if not tokens:
            return
        end = path.end
        if end is not None and end.refs == 1:  # nobody else holds its last run: grow it in place
            end.tokens.extend(tokens)
        else:
            parent = end or self.root
            run = Run(list(tokens), path.length, parent)
            parent.children.setdefault(tokens[0], []).append(run)
            if end is not None:
                end.ends.discard(path)
            run.ends.add(path)
            run.refs = 1
            run.live = int(path.running)
            path.end = run
        self.cells += len(tokens)
        if not path.running:
            self.cached += len(tokens)
        path.length += len(tokens)

    def truncate(self, path: Path, length: int) -> None:
        """``path`` keeps only its first ``length`` cells."""
        if length >= path.length:
            return
        if length <= 0:
            self.clear(path)
            return
        end = path.end
        if end.refs == 1 and end.start < length:  # its own run: cut it
            cut = end.end - length
            del end.tokens[length - end.start:]
            self._freed(end, cut)
            path.length = length
            return
        keep = self._run_at(path, length)
        self._drop(path, stop=keep)
        self._hold(path, keep, counted=True)

    def clear(self, path: Path) -> None:
        """``path`` holds nothing any more."""
        self._drop(path, stop=None)
        path.end, path.length = None, 0

    def set_running(self, path: Path, running: bool) -> None:
        """A sequence started or stopped running on ``path`` (what is cached changes with it)."""
        if path.running == running:
            return
        path.running = running
        step = 1 if running else -1
        for run in path.end.chain() if path.end is not None else ():
            before = run.live
            run.live += step
            if before == 0 and run.live == 1:
                self.cached -= len(run.tokens)
            elif before == 1 and run.live == 0:
                self.cached += len(run.tokens)

    # -- internals --------------------------------------------------------------------------------
    def _run_at(self, path: Path, length: int) -> Run:
        """The run of ``path`` whose last cell is position ``length - 1`` (splitting one if needed)."""
        run = path.end
        while run.start >= length:
            run = run.parent
        if run.end > length:
            run = self._split(run, length - run.start)
        return run

    def _split(self, run: Run, k: int) -> Run:
        """Cut ``run`` after its first ``k`` tokens; returns the new upper run (same holders)."""
        upper = Run(run.tokens[:k], run.start, run.parent)
        upper.refs, upper.live = run.refs, run.live
        siblings = run.parent.children[run.tokens[0]]
        siblings[siblings.index(run)] = upper
        del run.tokens[:k]
        run.start += k
        run.parent = upper
        upper.children[run.tokens[0]] = [run]
        return upper

    def _hold(self, path: Path, run: Run, counted: bool = False) -> None:
        """``path`` ends at ``run``; ``counted``: its references up to there are already counted."""
        run.ends.add(path)
        path.end, path.length = run, run.end
        if counted:
            return
        for r in run.chain():
            r.refs += 1
            if path.running:
                r.live += 1
                if r.live == 1:
                    self.cached -= len(r.tokens)

    def _drop(self, path: Path, stop: Run | None) -> None:
        """Release ``path``'s references from its end up to (not including) ``stop``."""
        if path.end is None:
            return
        path.end.ends.discard(path)
        for run in list(path.end.chain()):
            if run is stop:
                break
            was_cached = run.live == 0
            run.refs -= 1
            if path.running:
                run.live -= 1
            n = len(run.tokens)
            if run.refs == 0:
                siblings = run.parent.children[run.tokens[0]]
                siblings.remove(run)
                if not siblings:
                    del run.parent.children[run.tokens[0]]
                self.cells -= n
                self.cached -= n if was_cached else 0
            elif run.live == 0 and not was_cached:
                self.cached += n

    def _freed(self, run: Run, n: int) -> None:
        """``n`` cells of ``run`` are no longer held (by anyone)."""
        self.cells -= n
        if run.live == 0:
            self.cached -= n


__all__ = ["Path", "PrefixTree", "Run", "common_prefix"]
