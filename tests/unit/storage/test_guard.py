"""The disk guard over a real filesystem driver whose reported free space the test sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.drivers.filesystem import FilesystemDriver
from dockyard.oci.errors import StorageFull
from dockyard.storage.guard import DiskGuard

MiB = 1024 * 1024


class SizedDriver(FilesystemDriver):
    """A filesystem driver reporting `free` of `total` bytes, less the ballast it holds."""

    def __init__(self, root: Path, free: int, total: int = 100 * MiB) -> None:
        super().__init__(root)
        self.free, self.total = free, total

    def space(self) -> tuple[int, int]:
        ballast = self.root / "reserve"
        taken = ballast.stat().st_size if ballast.exists() else 0
        return self.free - taken, self.total


def guard(driver: SizedDriver, *, min_free: int = 5 * MiB, reserve: int = 2 * MiB
          ) -> DiskGuard:
    return DiskGuard(driver, min_free=lambda _total: min_free, reserve=reserve, interval=0)


async def test_refuses_below_min_free_counting_the_announced_body(tmp_path: Path) -> None:
    driver = SizedDriver(tmp_path, free=20 * MiB)
    g = guard(driver)
    await g.check()
    await g.check(incoming=10 * MiB)  # 20 - 2 (reserve) - 10 = 8 MiB stay free
    with pytest.raises(StorageFull, match=r"insufficient storage.*storage\.guard\.min_free"):
        await g.check(incoming=14 * MiB)
    driver.free = 6 * MiB
    with pytest.raises(StorageFull):
        await g.check()


async def test_reserve_is_made_released_and_made_again(tmp_path: Path) -> None:
    driver = SizedDriver(tmp_path, free=20 * MiB)
    g = guard(driver)
    await g.ensure()
    ballast = tmp_path / "reserve"
    assert ballast.stat().st_size == 2 * MiB
    assert g.release()
    assert not ballast.exists()
    assert not g.release()  # nothing more to give back
    # the disk is nearly full (why it was released): the 2 MiB it gave back are not the
    # uploads' to take (6 - 2 < 5), and there is no room to make it again (6 < 5 + 2)
    driver.free = 6 * MiB
    with pytest.raises(StorageFull):
        await g.check()
    assert not ballast.exists()
    # with room for min_free and the reserve, it is made again before anything else
    driver.free = 8 * MiB
    with pytest.raises(StorageFull):
        await g.check(incoming=2 * MiB)  # 8 - 2 (made again) - 2 < 5
    assert ballast.stat().st_size == 2 * MiB
    await g.check()


async def test_min_free_zero_refuses_nothing(tmp_path: Path) -> None:
    g = guard(SizedDriver(tmp_path, free=0), min_free=0, reserve=0)
    await g.check(incoming=10 * MiB)
    assert not (tmp_path / "reserve").exists()


async def test_reading_is_reused_while_far_from_the_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dockyard.storage.guard.FRESH", 0.0)
    driver = SizedDriver(tmp_path, free=50 * MiB)
    g = DiskGuard(driver, min_free=lambda _total: 5 * MiB, reserve=0, interval=3600)
    await g.check()
    driver.free = 0  # not read again: 50 MiB is far above twice min_free
    await g.check()
    g.wrote(42 * MiB)  # what this process wrote brings it near the line: read again
    with pytest.raises(StorageFull):
        await g.check()


async def test_refusals_are_counted_each_and_logged_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("dockyard.storage.guard.time.monotonic", lambda: clock[0])
    g = guard(SizedDriver(tmp_path, free=3 * MiB), reserve=0)
    counted: list[int] = []
    g.on_refusal = lambda: counted.append(1)
    caplog.set_level("WARNING", logger="dockyard.storage.guard")
    for _ in range(50):
        with pytest.raises(StorageFull):
            await g.check()
        clock[0] += 0.5  # 25 s of refusals
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("refused 1 upload(s)")
    assert g.refused == 50
    assert len(counted) == 50
    clock[0] += 60
    with pytest.raises(StorageFull):
        await g.check()
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].startswith("refused 50 upload(s) since the last")


async def test_a_guard_refusal_is_not_logged_by_the_dispatcher_each_time() -> None:
    from dockyard.storage.guard import UploadsRefused

    assert issubclass(UploadsRefused, StorageFull)
    assert UploadsRefused("x").server_fault
    assert not UploadsRefused("x").log_each
    assert StorageFull("x").log_each  # a disk found full by a write is still logged
