"""The node's count of unauthenticated connections per address (`api.admission`): rows
of one shared table summed, a row cleared with its dead worker, never under-counted."""

from __future__ import annotations

import multiprocessing
import random

from dockyard.api.admission import AddressCounts, SharedCounts, clear_row, node_table

KEY = b"k" * 16


def workers(rows: int) -> tuple[object, list[AddressCounts]]:
    table = node_table(rows, multiprocessing.get_context("fork"))
    return table, [AddressCounts(SharedCounts(table, rows, row, KEY)) for row in range(rows)]


def test_every_worker_sees_the_node_count() -> None:
    _, (first, second) = workers(2)
    first.add("10.0.0.1", 1)
    second.add("10.0.0.1", 1)
    second.add("10.0.0.1", 1)
    assert first.count("10.0.0.1") == second.count("10.0.0.1") == 3
    assert first.count("10.0.0.2") == 0
    first.add("10.0.0.1", -1)
    assert second.count("10.0.0.1") == 2


def test_a_dead_workers_row_is_forgotten() -> None:
    table, (first, second) = workers(2)
    first.add("10.0.0.1", 2)
    second.add("10.0.0.1", 1)
    clear_row(table, 0)
    assert second.count("10.0.0.1") == 1
    clear_row(table, 1)
    assert second.count("10.0.0.1") == 0


def test_never_under_counts_and_a_crowd_does_not_fill_another_address() -> None:
    # 2,000 addresses with 1-5 connections each on three workers, one with 64 (at the
    # default cap): every count is at least the truth, and none of the others reads 64
    _, counts = workers(3)
    rng = random.Random(7)
    truth = {f"10.0.{i // 256}.{i % 256}": rng.randint(1, 5) for i in range(2000)}
    truth["192.0.2.1"] = 64
    for address, n in truth.items():
        for _ in range(n):
            rng.choice(counts).add(address, 1)
    seen = {address: counts[1].count(address) for address in truth}
    assert all(seen[a] >= n for a, n in truth.items())
    assert seen["192.0.2.1"] == 64
    assert max(n for a, n in seen.items() if a != "192.0.2.1") < 64
    assert sum(seen[a] > n for a, n in truth.items()) < len(truth) * 0.1


def test_a_single_process_server_counts_alone() -> None:
    alone = AddressCounts()
    alone.add("::1", 1)
    assert alone.count("::1") == 1
    alone.add("::1", -1)
    assert alone.count("::1") == 0
