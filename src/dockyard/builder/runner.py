"""Run a plan: independent branches in parallel, tests in each built image, then, only if
every selected image built and passed, push them all, parents first.

A failed image fails everything below it. Each image's engine output goes to its own
log file under the work directory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.builder.display import Display
from dockyard.builder.engine import BuildRequest, Engine, EngineError
from dockyard.builder.plan import KEY_LABEL, Plan, Step
from dockyard.builder.provenance import Provenance, for_image
from dockyard.builder.remote import REGISTRY_ERRORS, Registries
from dockyard.builder.sbom import (
    APK_INSTALLED,
    DPKG_STATUS,
    SPDX_MEDIA_TYPE,
    Package,
    apk_packages,
    dpkg_packages,
    spdx_document,
)


@dataclass(frozen=True, slots=True)
class Options:
    work: Path
    jobs: int = 2
    push: bool = False
    no_cache: bool = False
    sbom: bool = True
    keep_same_layers: bool = False


@dataclass(slots=True)
class Result:
    """What became of one selected image."""

    path: str
    name: str
    key: str
    state: str = "queued"
    digest: str | None = None
    error: str | None = None
    log: Path | None = None
    seconds: float = 0.0
    reason: str = ""
    pushed: list[str] = field(default_factory=list)
    packages: list[Package] | None = None
    created: str | None = None
    sbom: str | None = None
    #: the OCI annotations the image was built with (set again on the pushed manifest
    #: where the engine cannot put them there: docker)
    annotations: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"image": self.path, "name": self.name, "key": self.key, "result": self.state,
                "reason": self.reason, "digest": self.digest, "error": self.error,
                "log": str(self.log) if self.log else None, "seconds": round(self.seconds, 3),
                "pushed": self.pushed, "sbom": self.sbom}


def image_annotations(step: Step, origin: Provenance) -> dict[str, str]:
    """The OCI annotations (and labels) each built image carries."""
    out = {KEY_LABEL: step.key, "org.opencontainers.image.created": origin.created,
           "org.opencontainers.image.title": step.image.path}
    if origin.source:
        out["org.opencontainers.image.source"] = origin.source
    if origin.revision:
        out["org.opencontainers.image.revision"] = origin.revision
    return out


class Runner:
    """Carries out one plan with one engine."""

    def __init__(self, plan: Plan, engine: Engine, registries: Registries, options: Options,
                 origin: Provenance, display: Display) -> None:
        self.plan = plan
        self.registries = registries
        self.engine = engine
        self.options = options
        self.origin = origin
        self.display = display
        self.logs = options.work / "logs"
        self.rendered = options.work / "rendered"
        self.results = {s.image.path: Result(s.image.path, s.image.name, s.key,
                                             reason=s.reason) for s in plan.steps}
        self._done = {s.image.path: asyncio.Event() for s in plan.steps}
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max(1, options.jobs))

    def _set(self, path: str, state: str, detail: str = "") -> None:
        self.results[path].state = state
        self.display.update(path, state, detail)

    async def run(self) -> list[Result]:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rendered.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(*(self._one(step) for step in self.plan.steps))
        if self.options.push:
            await self._publish()
        return [self.results[s.image.path] for s in self.plan.steps]

    async def _one(self, step: Step) -> None:
        path = step.image.path
        result = self.results[path]
        try:
            for parent in step.parents:
                if parent in self._done:
                    await self._done[parent].wait()
                    if self.results[parent].state == "failed":
                        result.error = f"parent {self.results[parent].name} failed"
                        self._set(path, "failed", result.error)
                        return
            if step.action == "skip":
                result.digest = step.remote.digest if step.remote else None
                self._set(path, "skipped", step.reason)
                return
            async with self._slots:
                started = time.monotonic()
                try:
                    await self._build(step, result)
                except EngineError as exc:
                    result.error = str(exc)
                    self._set(path, "failed", result.error)
                finally:
                    result.seconds = time.monotonic() - started
        finally:
            self._done[path].set()

    async def _ensure_base(self, ref: str, log: Path) -> None:
        """Pull a base that was not built in this run, once per run, before building on it."""
        task = self._pulls.get(ref)
        if task is None:
            task = asyncio.ensure_future(self.engine.pull(ref, log))
            self._pulls[ref] = task
        await asyncio.shield(task)

    async def _build(self, step: Step, result: Result) -> None:
        path = step.image.path
        flat = path.replace("/", "-")
        log = self.logs / f"{flat}.log"
        log.write_bytes(b"")
        result.log = log
        built_here = {self.results[p].name for p in step.parents
                      if p in self.results and self.results[p].state == "built"}
        graph = self.plan.graph
        catalogue_names = {graph.nodes[p].image.name: p for p in graph.nodes[path].parents}
        self._set(path, "pulling")
        for base in graph.nodes[path].external + list(catalogue_names):
            if base not in built_here:
                await self._ensure_base(base, log)
        self._set(path, "building")
        dockerfile = self.rendered / flat / "Dockerfile"
        dockerfile.parent.mkdir(parents=True, exist_ok=True)
        dockerfile.write_text(step.dockerfile)
        origin = await asyncio.to_thread(for_image, self.origin, step.inputs)
        result.created = origin.created
        meta = image_annotations(step, origin)
        result.annotations = meta
        tags = [step.image.name] + [f"{step.image.name.rsplit(':', 1)[0]}:{t}"
                                    for t in step.image.settings.tags]
        build_limit = step.image.settings.build_timeout.total_seconds()
        try:
            async with asyncio.timeout(build_limit):  # the engine command is stopped
                await self.engine.build(BuildRequest(
                    dockerfile=dockerfile, context=self.plan.root, tags=tags,
                    build_args=step.image.settings.build_args, labels=meta,
                    annotations=meta, timestamp=origin.epoch,
                    no_cache=self.options.no_cache,
                    platforms=step.image.settings.platforms), log)
        except TimeoutError:
            raise EngineError(f"the build did not end within {build_limit:g} s "
                              f"(build_timeout; log: {log})") from None
        limit = step.image.settings.test_timeout.total_seconds()
        for i, command in enumerate(step.image.settings.tests, 1):
            self._set(path, "testing", f"{i}/{len(step.image.settings.tests)}: {command}")
            try:
                async with asyncio.timeout(limit):  # the engine removes its container
                    await self.engine.run(step.image.name, command, log)
            except TimeoutError:
                raise EngineError(f"test {command!r} did not end within {limit:g} s "
                                  f"(test_timeout; log: {log})") from None
            except EngineError as exc:
                raise EngineError(f"test {command!r} failed (log: {log})") from exc
        if self.options.push and self.options.sbom:
            result.packages = await self._packages(step.image.name, log)
        self._set(path, "built")

    async def _packages(self, image: str, log: Path) -> list[Package] | None:
        """The image's installed packages (dpkg or apk database), None without either."""
        status = await self.engine.read_file(image, DPKG_STATUS, log)
        if status is not None:
            return dpkg_packages(status.decode("utf-8", errors="replace"))
        installed = await self.engine.read_file(image, APK_INSTALLED, log)
        if installed is not None:
            return apk_packages(installed.decode("utf-8", errors="replace"))
        return None

    async def _publish(self) -> None:
        built = [s for s in self.plan.steps if self.results[s.image.path].state == "built"]
        failed = [r for r in self.results.values() if r.state == "failed"]
        if failed:
            for step in built:
                self.results[step.image.path].reason = "not pushed: another image failed"
            return
        # the digests children point at: pushed in this run, or found in the registry
        digests = {r.name: r.digest for r in self.results.values() if r.digest}
        for step in built:  # plan order: parents first
            path = step.image.path
            result = self.results[path]
            repo = step.image.name.rsplit(":", 1)[0]
            try:
                if self.options.keep_same_layers and step.remote is not None and \
                        await self._same_layers(step):
                    result.digest = step.remote.digest
                    digests[step.image.name] = result.digest
                    self._set(path, "kept", "same layers as the registry's: tag not moved")
                    continue
                self._set(path, "pushing")
                await self.engine.push(step.image.name, step.image.name,
                                       self.logs / f"{path.replace('/', '-')}.log")
                result.digest = await self.registries.amend(
                    step.image.name, {**result.annotations, **self._base_digest(step, digests)},
                    step.image.settings.tags)
            except (EngineError, *REGISTRY_ERRORS) as exc:
                result.error = str(exc)
                self._set(path, "failed", result.error)
                return
            digests[step.image.name] = result.digest
            if result.packages is not None and result.digest:
                document = spdx_document(step.image.name, step.key,
                                         result.created or self.origin.created,
                                         result.packages)
                try:
                    result.sbom = await self.registries.attach(
                        step.image.name, result.digest, SPDX_MEDIA_TYPE, document)
                except REGISTRY_ERRORS as exc:
                    result.error = f"SBOM not attached: {exc}"
            result.pushed = [step.image.name] + [f"{repo}:{t}" for t in step.image.settings.tags]
            self._set(path, "pushed", result.digest or "")

    async def _same_layers(self, step: Step) -> bool:
        log = self.logs / f"{step.image.path.replace('/', '-')}.log"
        local = await self.engine.layers(step.image.name, log)
        return local == await self.registries.diff_ids(step.image.name)

    def _base_digest(self, step: Step, digests: dict[str, str]) -> dict[str, str]:
        """The base digest annotation, when the base is a catalogue image: the engine
        stamps its local digest, which is not the one the registry serves."""
        base = self.plan.graph.nodes[step.image.path].final_base
        digest = digests.get(base or "")
        if base is None or not digest:
            return {}
        return {"org.opencontainers.image.base.name": base,
                "org.opencontainers.image.base.digest": digest}
