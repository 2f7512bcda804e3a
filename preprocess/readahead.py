"""Reads a unit's input files on background threads, in the order the build needs them.

PNG decoding and file reads release the GIL, so while the main thread projects and writes
frame t, two reader threads decode the sweeps and images of the next frames. Decoding is the
build's longest chain of work (it is the I/O floor itself), so it is split over two threads
rather than left to one that the other threads keep preempting. Each file is still read once
and its result is dropped once handed over. Reads run at most `lookahead` keys
past the one last asked for; results nobody asks for (e.g. the image of a frame whose
sweep was corrupt) stay until `close`, so memory is bounded by the lookahead plus a unit's
skipped frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Key = tuple[str, int]  # (kind, frame)


class ReadAhead:
    """`get((kind, frame))` returns `readers[kind](frame)`, read ahead along `order`.

    Errors raised by a reader (e.g. InputError for a corrupt file) are re-raised by `get`;
    a key outside `order` is read on the spot.
    """

    def __init__(
        self,
        readers: dict[str, Callable[[int], Any]],
        order: Iterable[Key],
        lookahead: int = 6,
        threads: int = 2,
    ):
        self.readers = readers
        self.order = list(dict.fromkeys(order))
        self.position = {key: n for n, key in enumerate(self.order)}
        self.lookahead = lookahead
        self._next = 0
        self._pending: dict[Key, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="readahead")

    def _submit_until(self, stop: int) -> None:
        while self._next < min(stop, len(self.order)):
            key = self.order[self._next]
            self._pending[key] = self._pool.submit(self.readers[key[0]], key[1])
            self._next += 1

    def get(self, key: Key) -> Any:
        n = self.position.get(key)
        if n is None:
            return self.readers[key[0]](key[1])
        self._submit_until(n + 1 + self.lookahead)
        future = self._pending.pop(key, None)
        return self.readers[key[0]](key[1]) if future is None else future.result()

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
