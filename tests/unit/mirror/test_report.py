"""A sync report as it is stored and logged: bounded names, whole counts; the counts of
a report stored before it had them are its lists' lengths."""

from __future__ import annotations

from dockyard.core.mirrors import report_counts
from dockyard.mirror.sync import SourceReport


def test_a_report_cut_to_its_first_names_keeps_its_whole_counts() -> None:
    report = SourceReport("s", "up/app", "app", added=[f"a{n}" for n in range(5)],
                          unchanged=["u"], failed={f"f{n}": "boom" for n in (3, 1, 2)})
    whole = report.as_dict()
    assert whole["added"] == report.added
    assert "counts" not in whole  # what `dockyard sync --json` prints: every tag
    cut = report.as_dict(2)
    assert cut["added"] == ["a0", "a1"]
    assert cut["unchanged"] == ["u"]
    assert cut["failed"] == {"f1": "boom", "f2": "boom"}
    assert cut["truncated"] is True
    assert report_counts(cut) == {"added": 5, "updated": 0, "unchanged": 1, "pruned": 0,
                                  "failed": 3}
    assert report.as_dict(5)["truncated"] is False
    assert report.added == [f"a{n}" for n in range(5)]  # the report itself is whole


def test_a_report_stored_before_counts_is_counted_by_its_lists() -> None:
    old = {"added": ["a", "b"], "updated": [], "pruned": ["p"], "failed": {"x": "e"}}
    assert report_counts(old) == {"added": 2, "updated": 0, "unchanged": 0, "pruned": 1,
                                  "failed": 1}
