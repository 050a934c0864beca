"""The ring's hot functions compile, inside a caller's kernel, to no reference counting.

Numba keeps an array argument alive with an incref/decref pair around its uses; when a
function's last use of ``hdr`` sits on one branch only, the pair survives inlining into
the caller, once per call. Each is a ``lock``-prefixed instruction, a full barrier that
waits for every pending slot store to reach the other core: single-record streaming ran at
a twelfth of a plain SPSC ring's rate because of it. The test compiles the same sequence of
ring calls once and three times in a row and requires the same number of NRT calls in the
native code (the function's own entry/exit pairs, if any, but none per call site).
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from bot4.records import MARKET_DATA
from bot4.shm import ring_ops as ops
from bot4.shm.ring_layout import (
    HEADER_WORDS,
    W_CAPACITY,
    W_CONSUMER_BATCHES,
    W_CONSUMER_POSITION,
    W_PRODUCER_BATCHES,
    W_PRODUCER_POSITION,
)


@njit(nogil=True)
def _calls_once(hdr, slots):
    mask = np.int64(slots.shape[0] - 1)
    acc = 0
    pos, c = ops.producer_claim(hdr, 1)
    if c:
        slots[np.int64(pos) & mask].seq = pos
        ops.producer_commit(hdr, c)
    pos, c = ops.consumer_peek(hdr, 1)
    if c:
        acc += slots[np.int64(pos) & mask].seq
        ops.consumer_release(hdr, c)
    pos, c = ops.producer_room(hdr, 2)
    return acc + c


@njit(nogil=True)
def _calls_thrice(hdr, slots):
    mask = np.int64(slots.shape[0] - 1)
    acc = 0
    pos, c = ops.producer_claim(hdr, 1)
    if c:
        slots[np.int64(pos) & mask].seq = pos
        ops.producer_commit(hdr, c)
    pos, c = ops.consumer_peek(hdr, 1)
    if c:
        acc += slots[np.int64(pos) & mask].seq
        ops.consumer_release(hdr, c)
    pos, c = ops.producer_room(hdr, 2)
    acc += c
    pos, c = ops.producer_claim(hdr, 1)
    if c:
        slots[np.int64(pos) & mask].seq = pos
        ops.producer_commit_nowake(hdr, c)
    pos, c = ops.consumer_peek(hdr, 1)
    if c:
        acc += slots[np.int64(pos) & mask].seq
        ops.consumer_release_nowake(hdr, c)
    pos, c = ops.producer_room(hdr, 2)
    acc += c
    pos, c = ops.producer_claim(hdr, 1)
    if c:
        slots[np.int64(pos) & mask].seq = pos
        ops.producer_commit(hdr, c)
    pos, c = ops.consumer_peek(hdr, 1)
    if c:
        acc += slots[np.int64(pos) & mask].seq
        ops.consumer_release(hdr, c)
    pos, c = ops.producer_room(hdr, 2)
    return acc + c


def _nrt_calls(fn) -> int:
    hdr = np.zeros(HEADER_WORDS, np.uint64)
    hdr[W_CAPACITY] = 8
    slots = np.zeros(8, MARKET_DATA)
    fn(hdr, slots)
    (asm,) = fn.inspect_asm().values()
    native = asm.split("_ZN7cpython")[0]  # the kernel itself, not its Python wrapper
    return len(re.findall(r"\bNRT_(?:incref|decref)\b", native))


def test_ring_calls_add_no_reference_counting_per_call_site():
    once, thrice = _nrt_calls(_calls_once), _nrt_calls(_calls_thrice)
    assert thrice == once, (
        f"{thrice} NRT calls for three rounds of ring calls vs {once} for one: a ring "
        "function leaves numba an incref/decref pair per call (see ring_ops' docstring)"
    )


def test_ring_calls_from_a_kernel_move_the_positions_and_count_batches():
    hdr = np.zeros(HEADER_WORDS, np.uint64)
    hdr[W_CAPACITY] = 8
    slots = np.zeros(8, MARKET_DATA)
    # three rounds of: publish seq = position, read it back, ask for room for two
    assert _calls_thrice(hdr, slots) == (0 + 1 + 2) + 3 * 2
    assert int(hdr[W_PRODUCER_POSITION]) == 3 and int(hdr[W_CONSUMER_POSITION]) == 3
    assert int(hdr[W_PRODUCER_BATCHES]) == 3 and int(hdr[W_CONSUMER_BATCHES]) == 3
