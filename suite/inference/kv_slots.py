"""The batched engine's sequence ids and the KV cells they hold: placing prompts, reusing prefixes.

A slot is one sequence id of the engine's context. A running sequence holds its slot; when it ends
its cells stay (the prefix cache) until the slot is needed again, so the cache never holds more
than the idle slots' share of the KV cache and never takes a cell a running sequence needs. A new
prompt is matched against everything the cache holds (``PrefixTree``: finished sequences *and*
running ones) and starts from the longest prefix found:

the prompt takes the least recently used idle slot (eviction is LRU: a source of a copy counts as
used), keeping its cells up to the prefix when it holds it, else taking the prefix from whichever
slot holds it (``llama_memory_seq_cp``): in a unified KV cache the cells are shared, not copied
(one 1,000-token system prompt is held once however many sequences start with it); with one KV
stream per sequence (``batch_invariant``) llama.cpp copies the whole stream at the next decode
(n_ctx cells: ~6 ms of CPU at n_ctx 2048 for Gemma 3 270M, the prefill of two or three tokens).

Sliding-window attention (Gemma 3): llama.cpp reuses a cell of the window layers' cache once it
has slid out of its only sequence's window (``llama_kv_cache::find_slot``), after which
``llama_memory_seq_pos_min`` of that sequence rises and a prefix shorter than its end can no longer
be continued. Two things keep reuse exact: before a prefix is taken, the source must still hold the
window before its end (``swa_ok``: ``pos_min <= m - n_swa + 1``, what a token at position m reads);
and in a unified cache every slot has a *pin*, a second sequence id (``slots + i``, never decoded)
that also holds the slot's cells before they slide out of the window, so no cell ever has a single
owner to lose. The context is created with ``swa_full`` (llama-cpp-python's default), so the window
layers' cache has room for every cell the full-attention layers hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp

from suite.inference.prefix_tree import Path, PrefixTree

LLAMA_MAX_SEQ = 256  # llama.cpp's limit on sequence ids (pins use slots..2*slots-1)
REUSE_MIN = 16  # a shorter common prefix (a BOS and a chat turn's header) is prefilled, not reused


@dataclass
class CacheStats:
    """Counters for /metrics and /health (read from other threads; written by the engine thread)."""

    lookups: int = 0  # prompts placed
    hits: int = 0  # ... that started from reused cells (at least REUSE_MIN tokens)
    tokens_reused: int = 0  # prompt tokens whose cells were reused instead of prefilled
    tokens_prefilled: int = 0  # prompt tokens decoded (counted by the engine after each decode)
    cells_evicted: int = 0  # cached cells dropped for the budget or after a failed decode


class Slot:
    """One sequence id: what it holds (``path``), whether a sequence runs on it, when it was last used."""

    __slots__ = ("busy", "path", "pin", "pinned", "seq_id", "used_at")

    def __init__(self, seq_id: int, pin: int | None) -> None:
        self.seq_id = seq_id
        self.pin = pin  # the second sequence id that keeps its window cells (unified cache + SWA)
        self.pinned = 0  # positions 0..pinned-1 are also held by the pin
        self.path = Path(self)
        self.busy = False
        self.used_at = 0

    def __repr__(self) -> str:
        return f"Slot({self.seq_id}, {self.path.length} cells, {'busy' if self.busy else 'idle'})"


class KvSlots:
    """The engine's slots over one llama.cpp memory; engine thread only."""

    def __init__(self, ctx, n_slots: int, *, share: bool, n_swa: int, cache_cells: int | None) -> None:
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.share = share  # unified KV cache: a copy shares cells
        self.n_swa = n_swa
        self.enabled = cache_cells != 0
        self.budget = cache_cells  # most cells the cache may hold; None: what the idle slots hold
        pins = share and n_swa > 0 and 2 * n_slots <= LLAMA_MAX_SEQ
        self.slots = [Slot(i, n_slots + i if pins else None) for i in range(n_slots)]
        self.tree = PrefixTree(share)
        self.stats = CacheStats()
        self._clock = 0

    # -- placing ----------------------------------------------------------------------------------
    def match(self, prompt: list[int]) -> int:
        """How much of ``prompt`` (all but its last token) the cache could start it from now."""
        if not self.enabled:
            return 0
        m, _ = self.tree.match(prompt, len(prompt) - 1)
        return m if m >= REUSE_MIN else 0

    def place(self, prompt: list[int]) -> tuple[Slot, int]:
        """An idle slot for ``prompt`` holding its longest cached prefix (``m`` cells; the prompt's
        last token is always decoded, for its logits)."""
        self.stats.lookups += 1
        m, run = self.tree.match(prompt, len(prompt) - 1) if self.enabled else (0, None)
        holders = [p.owner for p in self.tree.holders(run)] if m >= REUSE_MIN else []
        sources = [s for s in holders if self.swa_ok(s, m)]
        slot = self._lru()  # eviction is LRU: the slot is the least recently used idle one
        if slot in sources:
            self._cut(slot, m)
        else:
            self.drop(slot)
            if not sources:
                m = 0
            else:
                self._copy(sources[0], slot, m)
        self._start(slot)
        if m:
            self.stats.hits += 1
            self.stats.tokens_reused += m
        return slot, m

    def copy(self, source: Slot, length: int) -> Slot:
        """An idle slot holding ``source``'s first ``length`` cells (the other choices of a request)."""
        slot = self._lru()
        self.drop(slot)
        self._copy(source, slot, length)
        self._start(slot)
        self.stats.tokens_reused += length
        return slot

    def swa_ok(self, slot: Slot, m: int) -> bool:
        """Whether ``slot`` still holds the window a token at position ``m`` attends to."""
        if not self.n_swa or not m:
            return True
        low = llama_cpp.llama_memory_seq_pos_min(self.mem, slot.seq_id)
        return 0 <= low <= max(0, m - self.n_swa + 1)

    # -- running ----------------------------------------------------------------------------------
    def before_decode(self, slot: Slot) -> None:
        """Pin ``slot``'s cells before the next decode could let them slide out of the window."""
        length = slot.path.length
        if slot.pin is not None and length - self.n_swa + 1 > slot.pinned:
            llama_cpp.llama_memory_seq_cp(self.mem, slot.seq_id, slot.pin, slot.pinned, length)
            slot.pinned = length

    def grew(self, slot: Slot, tokens: list[int]) -> None:
        """``slot`` decoded ``tokens`` (a successful ``llama_decode``)."""
        self.tree.extend(slot.path, tokens)

    def rewind(self, slot: Slot, length: int) -> None:
        """Drop whatever ``slot`` holds past ``length`` (after a failed decode)."""
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq_id, length, -1)
        if slot.pin is not None:
            llama_cpp.llama_memory_seq_rm(self.mem, slot.pin, length, -1)
            slot.pinned = min(slot.pinned, length)
        self.tree.truncate(slot.path, length)

    def release(self, slot: Slot, keep: bool) -> None:
        """The sequence on ``slot`` ended: its cells stay cached (``keep``, within the budget) or go."""
        slot.busy = False
        self.tree.set_running(slot.path, False)
        slot.used_at = self._tick()
        if keep and self.enabled and slot.path.length >= REUSE_MIN:  # a shorter one could never be reused
            self._fit_budget()
        else:
            self.drop(slot)

    def drop(self, slot: Slot) -> None:
        """Remove every cell ``slot`` (and its pin) holds."""
        if slot.path.length or slot.pinned:
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq_id, -1, -1)
            if slot.pin is not None:
                llama_cpp.llama_memory_seq_rm(self.mem, slot.pin, -1, -1)
            slot.pinned = 0
            self.tree.clear(slot.path)

    def evict_cached(self) -> bool:
        """Drop every idle slot's cells; whether that freed any."""
        before = self.tree.cells
        for slot in self.slots:
            if not slot.busy:
                self.drop(slot)
        self.stats.cells_evicted += before - self.tree.cells
        return self.tree.cells < before

    @property
    def idle(self) -> int:
        return sum(not s.busy for s in self.slots)

    def mismatches(self) -> list[str]:
        """Where llama.cpp's memory and the tree disagree (tests): each slot's last position."""
        out = []
        for s in self.slots:
            have = llama_cpp.llama_memory_seq_pos_max(self.mem, s.seq_id) + 1
            if have != s.path.length:
                out.append(f"slot {s.seq_id}: llama.cpp holds {have} positions, the tree {s.path.length}")
        return out

    # -- internals --------------------------------------------------------------------------------
    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _lru(self) -> Slot:
        return min((s for s in self.slots if not s.busy), key=lambda s: s.used_at)

    def _start(self, slot: Slot) -> None:
        slot.busy = True
        slot.used_at = self._tick()
        self.tree.set_running(slot.path, True)

    def _cut(self, slot: Slot, m: int) -> None:
        if m < slot.path.length:
            self.rewind(slot, m)

    def _copy(self, source: Slot, target: Slot, m: int) -> None:
        if self.share:
            llama_cpp.llama_memory_seq_cp(self.mem, source.seq_id, target.seq_id, 0, m)
            if target.pin is not None:
                llama_cpp.llama_memory_seq_cp(self.mem, source.seq_id, target.pin, 0, m)
                target.pinned = m
        else:  # one stream per sequence: llama.cpp copies the whole stream at the next decode
            llama_cpp.llama_memory_seq_cp(self.mem, source.seq_id, target.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_rm(self.mem, target.seq_id, m, -1)
        self.tree.attach(target.path, source.path, m)
        source.used_at = self._tick()

    def _fit_budget(self) -> None:
        if self.budget is None:
            return
        for slot in sorted((s for s in self.slots if not s.busy and s.path.length), key=lambda s: s.used_at):
            if self.tree.cached <= self.budget:
                break
            before = self.tree.cells
            self.drop(slot)
            self.stats.cells_evicted += before - self.tree.cells


__all__ = ["CacheStats", "KvSlots", "REUSE_MIN", "Slot"]
