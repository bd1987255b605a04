"""The scheduler with a recording engine: parallelism bound, failures flow down, push rules.

The end-to-end proof with buildah is tests/e2e/test_builder.py; this pins the scheduling
rules that one catalogue cannot show (two failures at once, the exact concurrency).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from dockyard.builder.catalogue import Naming
from dockyard.builder.display import Display
from dockyard.builder.engine import BuildRequest, EngineError
from dockyard.builder.plan import Plan, Step, load_graph
from dockyard.builder.provenance import Provenance
from dockyard.builder.remote import Registries
from dockyard.builder.runner import Options, Runner

NAMING = Naming("reg.example", "p", "t")


class FakeRegistries(Registries):
    """Publishing's registry calls answered in memory (the amended digest is the pushed one)."""

    async def amend(self, ref: str, annotations: dict[str, str], tags: list[str]) -> str:
        return "sha256:" + "0" * 64


class RecordingEngine:
    name = "fake"

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.running = 0
        self.most = 0
        self.pushed: list[str] = []

    async def build(self, request: BuildRequest, log: Path) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        if request.tags[0] in self.fail:
            raise EngineError(f"{request.tags[0]} failed")

    async def pull(self, image: str, log: Path) -> None:
        pass

    async def run(self, image: str, command: str, log: Path) -> None:
        pass

    async def push(self, image: str, dest: str, log: Path) -> str:
        self.pushed.append(dest)
        return "sha256:" + "0" * 64

    async def read_file(self, image: str, path: str, log: Path) -> bytes | None:
        return None

    async def layers(self, image: str, log: Path) -> list[str]:
        return []


def _plan(tmp_path: Path) -> Plan:
    root = tmp_path / "cat"
    tree = {"a": None, "b": None, "c": None, "a/x": "a", "a/x/y": "a-x", "b/z": "b"}
    for path, parent in tree.items():
        (root / path).mkdir(parents=True, exist_ok=True)
        base = f"reg.example/p-{parent}:t" if parent else "scratch"
        (root / path / "Dockerfile").write_text(f"FROM {base}\n")
    graph = load_graph(root, NAMING)[0]
    plan = Plan(root, NAMING, graph)
    for path in graph.order:
        node = graph.nodes[path]
        plan.steps.append(Step(node.image, "", None, "sha256:k", list(node.parents)))  # type: ignore[arg-type]
    return plan


async def _run(tmp_path: Path, fail: set[str], jobs: int, push: bool
               ) -> tuple[RecordingEngine, dict[str, str], Runner]:
    plan = _plan(tmp_path)
    engine = RecordingEngine({f"reg.example/p-{f}:t" for f in fail})
    display = Display({s.image.path: s.image.name for s in plan.steps}, stream=io.StringIO(),
                      live=False)
    runner = Runner(plan, engine, FakeRegistries([]), Options(tmp_path / "work", jobs=jobs,
                                                           push=push, sbom=False),
                    Provenance(None, None, 0), display)
    results = await runner.run()
    return engine, {r.path: r.state for r in results}, runner


async def test_at_most_jobs_builds_at_once(tmp_path: Path) -> None:
    engine, states, _ = await _run(tmp_path, set(), jobs=2, push=False)
    assert engine.most == 2
    assert set(states.values()) == {"built"}
    engine, _, _ = await _run(tmp_path / "one", set(), jobs=1, push=False)
    assert engine.most == 1


async def test_a_failure_fails_the_descendants_only_and_pushes_nothing(tmp_path: Path) -> None:
    engine, states, runner = await _run(tmp_path, {"a"}, jobs=2, push=True)
    assert states == {"a": "failed", "a/x": "failed", "a/x/y": "failed",
                      "b": "built", "b/z": "built", "c": "built"}
    assert runner.results["a/x/y"].error == "parent reg.example/p-a-x:t failed"
    assert engine.pushed == []


async def test_push_goes_parents_first(tmp_path: Path) -> None:
    engine, states, _ = await _run(tmp_path, set(), jobs=2, push=True)
    assert set(states.values()) == {"pushed"}
    order = [p.removeprefix("reg.example/p-").removesuffix(":t") for p in engine.pushed]
    assert order.index("a") < order.index("a-x") < order.index("a-x-y")
    assert order.index("b") < order.index("b-z")


def test_live_display_draws_and_summarises() -> None:
    out = io.StringIO()
    with Display({"a": "reg/p-a:t"}, stream=out, live=True) as display:
        display.update("a", "building")
        display.update("a", "built")
    display.summary([("reg/p-a:t", "built", "sha256:0", "1.0s")])
    assert "reg/p-a:t" in out.getvalue()
    assert "built" in out.getvalue()
