"""The build's read-ahead: each file read once, in order, errors re-raised where consumed."""

from __future__ import annotations

import threading

import pytest

from preprocess.errors import InputError
from preprocess.readahead import ReadAhead


@pytest.mark.parametrize("threads", [1, 2])
def test_reads_each_key_once_ahead_of_use_and_reraises_errors(threads):
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()

    def reader(kind):
        def read(frame):
            with lock:
                calls.append((kind, frame))
            if kind == "image" and frame == 2:
                raise InputError(f"{frame}.png", "corrupt PNG")
            return kind, frame

        return read

    order = [("sweep", f) for f in range(5)] + [("image", f) for f in range(5)]
    readers = {"sweep": reader("sweep"), "image": reader("image")}
    with ReadAhead(readers, order, lookahead=2, threads=threads) as reads:
        assert reads.get(("sweep", 0)) == ("sweep", 0)
        assert len(calls) <= 3, "no more than `lookahead` reads beyond the one asked for"
        for f in range(1, 5):
            assert reads.get(("sweep", f)) == ("sweep", f)
        assert reads.get(("image", 0)) == ("image", 0)
        assert reads.get(("image", 1)) == ("image", 1)
        with pytest.raises(InputError, match="corrupt PNG"):
            reads.get(("image", 2))
        assert reads.get(("image", 4)) == ("image", 4)
    assert sorted(set(calls)) == sorted(calls), "no file is read twice"
    assert set(calls) == set(order[: len(calls)]), "reads follow the consumption order"
