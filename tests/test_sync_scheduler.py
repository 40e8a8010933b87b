"""The daemon's wake rules (`SyncScheduler`), driven directly with a fake clock, and its trio
task (`run_wakes`) under trio's autojump clock: every deadline is exact, no real waiting."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from mindoo_p2p.daemon import (
    CONNECT_FOLLOWER_DELAY,
    FORWARD_DELAY,
    REPAIR_DELAY,
    Origin,
    SyncScheduler,
    run_wakes,
)

INTERVAL = 100.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scheduler(clock: FakeClock, *, gossip: bool = True, seed: int = 1) -> SyncScheduler:
    return SyncScheduler(
        sync_interval_s=INTERVAL, gossip=gossip, clock=clock, rng=random.Random(seed)
    )


def test_the_leader_syncs_at_once_the_follower_after_its_delay() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("lead", lead=True)
    rules.connected("follow", lead=False)
    assert rules.due() == ["lead"]
    assert rules.next_deadline() == CONNECT_FOLLOWER_DELAY
    clock.now = CONNECT_FOLLOWER_DELAY - 0.01
    assert rules.due() == []
    clock.now = CONNECT_FOLLOWER_DELAY
    assert rules.due() == ["follow"]
    clock.now += 10
    assert rules.due() == []  # once


def test_a_session_the_peer_started_cancels_the_follower_wake() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("follow", lead=False)
    clock.now = 1.0
    rules.session_recorded("follow")
    clock.now = CONNECT_FOLLOWER_DELAY + 1
    assert rules.due() == []


def test_a_disconnected_peer_is_never_woken() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("p", lead=False)
    rules.entries_stored(Origin.LOCAL)
    rules.disconnected("p")
    rules.wake("p")
    clock.now = 50.0
    assert rules.due() == []
    assert rules.wake_all() == 0


@pytest.mark.parametrize(
    ("origin", "delay"),
    [
        (Origin.LOCAL, REPAIR_DELAY),
        (Origin.GOSSIP, REPAIR_DELAY),
        (Origin.SYNC, FORWARD_DELAY),
        (Origin.IMPORT, FORWARD_DELAY),
        (Origin.OTHER, FORWARD_DELAY),
    ],
)
def test_stored_entries_wake_every_peer_after_their_origins_delay(
    origin: Origin, delay: float
) -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    for peer in ("a", "b"):
        rules.connected(peer, lead=False)
        rules.session_recorded(peer)
    rules.entries_stored(origin)
    assert rules.next_deadline() == delay
    clock.now = delay / 2
    assert rules.due() == []
    clock.now = delay
    assert sorted(rules.due()) == ["a", "b"]
    assert rules.due() == []


def test_without_gossip_stored_entries_wake_every_peer_at_once() -> None:
    clock = FakeClock()
    rules = scheduler(clock, gossip=False)
    rules.connected("a", lead=True)
    assert rules.due() == ["a"]
    for origin in Origin:
        rules.entries_stored(origin)
        assert rules.due() == ["a"]
    rules.resync()
    assert rules.due() == ["a"]


def test_a_burst_is_one_round_at_the_earliest_deadline() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("a", lead=True)
    rules.due()
    rules.entries_stored(Origin.LOCAL)  # 0.5 s
    clock.now = 0.1
    rules.entries_stored(Origin.SYNC)  # 0.15 s: brings it forward
    rules.entries_stored(Origin.LOCAL)  # 0.6 s: changes nothing
    assert rules.next_deadline() == pytest.approx(0.1 + FORWARD_DELAY)
    clock.now = 0.1 + FORWARD_DELAY
    assert rules.due() == ["a"]
    clock.now = 1.0
    assert rules.due() == []  # one round for the whole burst


def test_a_resync_wakes_every_peer_soon() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("a", lead=True)
    rules.due()
    rules.resync()
    clock.now = FORWARD_DELAY
    assert rules.due() == ["a"]


def test_a_gap_or_a_wanted_entry_wakes_that_peer_at_once() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("a", lead=True)
    rules.connected("b", lead=True)
    rules.due()
    rules.wake("b")
    assert rules.next_deadline() == -float("inf")
    assert rules.due() == ["b"]
    rules.wake("stranger")  # not connected: ignored
    assert rules.due() == []
    assert rules.wake_all() == 2
    assert sorted(rules.due()) == ["a", "b"]


def test_the_periodic_wake_picks_a_random_peer_every_interval_plus_minus_20_percent() -> None:
    clock = FakeClock()
    rules = scheduler(clock, seed=7)
    peers = ["a", "b", "c"]
    for peer in peers:
        rules.connected(peer, lead=True)
    rules.due()
    picked = []
    last = 0.0
    for _ in range(60):
        deadline = rules.next_deadline()
        assert 0.8 * INTERVAL <= deadline - last <= 1.2 * INTERVAL
        clock.now = last = deadline
        (peer,) = rules.due()
        picked.append(peer)
    assert set(picked) == set(peers)  # random, not always the same


def test_the_periodic_wake_is_drawn_from_the_injected_randomness() -> None:
    fresh = scheduler(FakeClock(), seed=7)
    assert fresh.next_deadline() == pytest.approx(random.Random(7).uniform(0.8, 1.2) * INTERVAL)


def test_the_periodic_wake_with_no_peer_connected_wakes_nobody() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    clock.now = rules.next_deadline()
    assert rules.due() == []
    assert rules.next_deadline() > clock.now  # and it is scheduled again


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="sync_interval_s"):
        SyncScheduler(sync_interval_s=0, gossip=True, clock=FakeClock())


async def test_run_wakes_wakes_each_peer_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    woken: list[tuple[float, str]] = []
    rules = SyncScheduler(sync_interval_s=INTERVAL, gossip=True, rng=random.Random(3))

    def wake(peer_id: str) -> None:
        woken.append((round(trio.current_time() - start, 6), peer_id))

    async with trio.open_nursery() as nursery:
        await nursery.start(run_wakes, rules, wake)
        rules.connected("lead", lead=True)
        rules.connected("follow", lead=False)
        await trio.sleep(1.0)
        rules.entries_stored(Origin.GOSSIP)  # at 1.0: every peer at 1.5
        await trio.sleep(0.1)
        rules.entries_stored(Origin.SYNC)  # at 1.1: brought forward to 1.15
        await trio.sleep(5.0)
        rules.wake("follow")  # a gap, at 6.1
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert woken == [
        (0.0, "lead"),
        (1.15, "lead"),
        (1.15, "follow"),
        (CONNECT_FOLLOWER_DELAY, "follow"),
        (6.1, "follow"),
    ]
    assert rules.on_change is None  # detached when the task ends


# -- one session per peer pair -------------------------------------------------------------------
def test_a_wake_for_a_peer_in_session_is_held_until_the_session_ends() -> None:
    """The regression the end-to-end clone showed: entries arriving by reconciliation wake every
    peer 50 ms later, the peer still pushing them included, so a second session fetched them
    all again. A peer in session is never due; its wake comes once, when the session ends."""
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("source", lead=False)
    rules.connected("other", lead=True)
    assert rules.due() == ["other"]
    rules.session_started("source")  # the source dialled in and pushes
    rules.entries_stored(Origin.SYNC)
    clock.now = FORWARD_DELAY
    assert rules.due() == ["other"]  # the other peer gets the entries offered on
    rules.wake("source")
    clock.now = 30.0  # long session; the connect follower wake was cancelled by it
    assert rules.due() == []
    rules.session_ended("source")
    assert rules.due() == ["source"]  # once, after
    clock.now = 60.0
    assert rules.due() == []


def test_sessions_in_both_directions_are_counted() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("peer", lead=True)
    assert rules.due() == ["peer"]
    rules.session_started("peer")  # ours
    rules.session_started("peer")  # theirs, for another tenant
    rules.wake_all()
    assert rules.due() == []
    rules.session_ended("peer")
    assert rules.due() == []  # one still runs
    rules.session_ended("peer")
    assert rules.due() == ["peer"]


def test_a_session_that_starts_cancels_the_follower_wake_even_before_it_ends() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("leader", lead=False)
    clock.now = 0.1
    rules.session_started("leader")
    clock.now = CONNECT_FOLLOWER_DELAY + 5  # the leader's session is still running
    assert rules.due() == []
    rules.session_ended("leader")
    assert rules.due() == []  # nothing was asked for meanwhile


def test_a_peer_that_disconnects_in_session_is_not_woken_after() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("peer", lead=True)
    rules.due()
    rules.session_started("peer")
    rules.wake("peer")
    rules.disconnected("peer")
    rules.session_ended("peer")
    assert rules.due() == []


def test_entries_a_session_delivered_are_not_offered_back_to_its_peer() -> None:
    """A first sync took four sessions: each side stored what the session delivered, woke the
    peer they came from (held until the session ended), then ran one more session with it that
    found nothing. The source peer is left out; every other peer still gets them offered."""
    clock = FakeClock()
    rules = scheduler(clock)
    rules.connected("source", lead=True)
    rules.connected("other", lead=True)
    assert rules.due() == ["source", "other"]
    rules.session_started("source")
    rules.entries_stored(Origin.SYNC, source="source")
    clock.now = FORWARD_DELAY
    assert rules.due() == ["other"]
    rules.session_ended("source")
    assert rules.due() == []  # no follow-up session with the source
    clock.now = 10.0
    assert rules.due() == []


def test_a_peer_is_left_out_only_when_every_batch_of_the_round_came_from_it() -> None:
    clock = FakeClock()
    rules = scheduler(clock)
    for peer_id in ("a", "b"):
        rules.connected(peer_id, lead=True)
    rules.due()
    rules.entries_stored(Origin.SYNC, source="a")
    rules.entries_stored(Origin.SYNC, source="b")
    clock.now = FORWARD_DELAY
    assert rules.due() == ["a", "b"]  # each holds what the other sent
    rules.entries_stored(Origin.SYNC, source="a")
    rules.entries_stored(Origin.LOCAL)  # written here: "a" lacks it
    clock.now = 2 * FORWARD_DELAY
    assert rules.due() == ["a", "b"]
    rules.entries_stored(Origin.SYNC, source="a")
    clock.now = 3 * FORWARD_DELAY
    assert rules.due() == ["b"]  # the exclusion does not outlive its round
    rules.entries_stored(Origin.SYNC)  # a sync batch of unknown source: nobody left out
    clock.now = 4 * FORWARD_DELAY
    assert rules.due() == ["a", "b"]
