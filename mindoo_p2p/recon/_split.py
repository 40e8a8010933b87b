"""How a sender describes a range of its items: one IdList when the range is small, otherwise a
fingerprint for each of a few consecutive sub-ranges (buckets) of about equal item counts.

Splitting is implementation-defined in Negentropy V1: the peer only recomputes fingerprints over
the bounds we send. That leaves room for :attr:`SplitPolicy.jitter`, which moves each cut point by
a random offset of up to ``jitter`` times the bucket size, so a peer cannot know in advance which
ranges will be compared (a cheap defence against ids crafted to collide within one range).
It is off by default: measured on 10^5 vs 10^5 items with the 1,000 newest items differing, a
jitter of 0.25 raised the traffic from 20.7 KB to 25.1 KB (round trips unchanged).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ._item import ReconItem
from ._messages import Bound, FingerprintRange, IdListRange, Range
from ._storage import ReconStorage

MAX_BUCKETS = 64
MAX_ID_LIST_THRESHOLD = 120
"""Upper limits that keep any single range's reply within the smallest frame (4096 bytes)."""

_SYSTEM_RANDOM = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class SplitPolicy:
    """``buckets`` sub-ranges per split (2-64); an IdList for ranges of fewer than
    ``id_list_threshold`` items (``buckets``-120); cut points moved by up to ``jitter`` (0 to
    0.45) times the bucket size, drawn from ``rng`` (default: the operating system's RNG)."""

    buckets: int = 16
    id_list_threshold: int = 32
    jitter: float = 0.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 2 <= self.buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be in [2, {MAX_BUCKETS}], got {self.buckets}")
        if not self.buckets <= self.id_list_threshold <= MAX_ID_LIST_THRESHOLD:
            raise ValueError(
                f"id_list_threshold must be in [buckets, {MAX_ID_LIST_THRESHOLD}],"
                f" got {self.id_list_threshold}"
            )
        if not 0.0 <= self.jitter <= 0.45:
            raise ValueError(f"jitter must be in [0, 0.45], got {self.jitter}")

    def cut_points(self, count: int) -> list[int]:
        """The ``buckets - 1`` interior cut offsets of a range of ``count >= buckets`` items,
        strictly increasing within (0, count), so every bucket holds at least one item."""
        buckets = self.buckets
        per_bucket, with_extra = divmod(count, buckets)
        cuts = [index * per_bucket + min(index, with_extra) for index in range(1, buckets)]
        shift = int(self.jitter * per_bucket)
        if shift:
            rng = self.rng if self.rng is not None else _SYSTEM_RANDOM
            cuts = [cut + rng.randint(-shift, shift) for cut in cuts]
        return cuts


DEFAULT_SPLIT = SplitPolicy()


def minimal_bound(previous: ReconItem, current: ReconItem) -> Bound:
    """The shortest bound above ``previous`` and at or below ``current`` (previous < current)."""
    if previous.timestamp != current.timestamp:
        return Bound(current.timestamp)
    shared = 0
    for left, right in zip(previous.id, current.id, strict=True):
        if left != right:
            break
        shared += 1
    return Bound(current.timestamp, current.id[: shared + 1])


def describe_range(
    storage: ReconStorage, lower: int, upper: int, upper_bound: Bound, policy: SplitPolicy
) -> list[Range]:
    """Our items [lower, upper), which end at ``upper_bound``, as the ranges to send."""
    count = upper - lower
    if count < policy.id_list_threshold:
        ids = tuple(item.id for item in storage.items(lower, upper))
        return [IdListRange(upper_bound, ids)]
    ranges: list[Range] = []
    start = lower
    for cut in policy.cut_points(count):
        end = lower + cut
        previous, current = storage.items(end - 1, end + 1)
        ranges.append(
            FingerprintRange(minimal_bound(previous, current), storage.fingerprint(start, end))
        )
        start = end
    ranges.append(FingerprintRange(upper_bound, storage.fingerprint(start, upper)))
    return ranges
