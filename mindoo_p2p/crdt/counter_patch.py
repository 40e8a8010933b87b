"""Turn integer ops of a change into counter ops by rewriting the change's bytes.

The binding cannot put a counter (``put(..., ScalarType.Counter, n)`` panics), but it can put
an integer and it can increment an existing counter. So a transaction that creates counters puts
their initial values as ``ScalarType.Int`` and notes those ops' counters; after the commit, this
module rewrites the value-metadata column of the resulting change so those ops' value type is
counter (8) instead of signed integer (4). Both are signed LEB128 in the raw-value column, so
only the type nibble of each metadata value changes; the metadata column is re-encoded (its run
structure may change), the column lengths and the chunk length follow, and the checksum is
recomputed. The patched change has a new hash; it is the one that is applied and shared.
"""

from __future__ import annotations

from collections.abc import Collection

from ..codec import encode_varint
from .change_chunk import (
    VALUE_META_SPEC,
    VALUE_TYPE_COUNTER,
    VALUE_TYPE_INT,
    VALUE_TYPE_MASK,
    ChangeChunk,
    encode_change_chunk,
    parse_change,
)
from .rle import Run, decode_uint_runs, encode_uint_runs, run_total


def _retype(runs: list[Run], indices: list[int]) -> list[Run]:
    """Runs with the values at sorted ``indices`` changed from int type to counter type."""
    out: list[Run] = []
    position = 0
    pending = iter(indices)
    target = next(pending, None)
    for value, count in runs:
        end = position + count
        cursor = position
        while target is not None and target < end:
            if value is None or value & VALUE_TYPE_MASK != VALUE_TYPE_INT:
                raise ValueError(f"op {target} of the change is not an integer op")
            if target > cursor:
                out.append((value, target - cursor))
            out.append(((value & ~VALUE_TYPE_MASK) | VALUE_TYPE_COUNTER, 1))
            cursor = target + 1
            target = next(pending, None)
        if end > cursor:
            out.append((value, end - cursor))
        position = end
    return out


def _rebuild_body(chunk: ChangeChunk, spec: int, new_data: bytes) -> bytes:
    body = chunk.body
    meta = bytearray(encode_varint(len(chunk.columns)))
    data = bytearray()
    for column in chunk.columns:
        column_data = new_data if column.spec == spec else body[column.start : column.end]
        meta += encode_varint(column.spec) + encode_varint(len(column_data))
        data += column_data
    return body[: chunk.columns_offset] + bytes(meta) + bytes(data) + body[chunk.data_end :]


def patch_counter_ops(change_bytes: bytes, op_counters: Collection[int]) -> bytes:
    """Return ``change_bytes`` with the ops numbered ``op_counters`` turned into counters.

    ``change_bytes`` is one change chunk (compressed or not) made by this process; each op
    counter must name an op of that change whose value is a signed integer. The result is an
    uncompressed change chunk with a valid checksum. Raises :class:`ValueError` if an op counter
    is outside the change or names a non-integer op, :class:`~mindoo_p2p.errors.DecodeError` if
    the change does not parse.
    """
    chunk = parse_change(change_bytes)
    if not op_counters:
        return change_bytes
    column = chunk.column(VALUE_META_SPEC)
    if column is None:
        raise ValueError("the change has no value metadata column")
    runs = decode_uint_runs(chunk.body[column.start : column.end], "value metadata column")
    op_count = run_total(runs)
    indices = sorted({counter - chunk.start_op for counter in op_counters})
    if indices[0] < 0 or indices[-1] >= op_count:
        raise ValueError(
            f"op counters {sorted(op_counters)} outside the change's ops"
            f" {chunk.start_op}..{chunk.start_op + op_count - 1}"
        )
    new_data = encode_uint_runs(_retype(runs, indices))
    return encode_change_chunk(_rebuild_body(chunk, VALUE_META_SPEC, new_data))
