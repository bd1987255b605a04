"""The web UI in a real browser (Debian's chromium, driven by Playwright) against a real
`dockyard serve` with htpasswd users and the platform's policy, holding real content:
images with a full config, a multi-platform index, an artifact referring to an image, a
private repository, and labels and annotations made of HTML and script.

Each page is also written as a screenshot at desktop and phone widths
(`var/ui-screenshots/`, or `$DOCKYARD_UI_SCREENSHOTS`) and checked with axe-core.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.authenv import USERS, basic_auth, write_config, write_htpasswd
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, axe_violations, screenshot
from tests.support.mediatypes import OCI_MANIFEST
from tests.support.oci_api import (
    Pushed,
    canonical,
    descriptor,
    digest_of,
    image_manifest,
    index_of,
    push_blob,
    put_manifest,
)
from tests.support.postgres import postgres_unavailable, running_postgres
from tests.support.servers import Server, start_dockyard

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SBOM_TYPE = "application/spdx+json"


def creds(user: str) -> tuple[str, str]:
    return user, USERS[user][0]


def config_blob(label: str = "demo") -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-11-30T12:00:00Z",
        "config": {"Env": ["PATH=/usr/bin", "APP_MODE=production"],
                   "Entrypoint": ["/usr/bin/app"], "Cmd": ["--serve", "--port=8080"],
                   "Labels": {"org.opencontainers.image.title": label}},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created": "2026-11-30T11:00:00Z", "created_by": "ADD rootfs.tar /"},
                    {"created": "2026-11-30T11:30:00Z", "created_by": "ENV APP_MODE=production",
                     "empty_layer": True},
                    {"created": "2026-11-30T12:00:00Z", "created_by": "COPY app /usr/bin/app"}],
    }).encode()


def tar_layer() -> bytes:
    """A gzip'ed tar layer as a build makes one: a folder, files (one named with HTML), a
    symlink and a whiteout."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tar.addfile(info, io.BytesIO(data))

        add("usr/bin/", kind=tarfile.DIRTYPE)
        add("usr/bin/app", b"#!/bin/sh\necho app\n" * 100)
        add("usr/bin/run", kind=tarfile.SYMTYPE, link="app")
        add(f"etc/{XSS}.conf", b"x=1\n")
        add("etc/.wh.old.conf")
    return out.getvalue()


def push(client: httpx.Client, repo: str, tag: str, config: bytes | None = None,
         extra: dict[str, Any] | None = None) -> Pushed:
    built = image_manifest(client, repo, layers=2, config=config or config_blob(repo),
                           extra=extra)
    r = put_manifest(client, repo, tag, built.payload, built.media_type)
    assert r.status_code == 201, r.text
    return built


@dataclass
class Registry:
    server: Server
    config: Path
    app_v1: Pushed
    sbom: Pushed
    index: Pushed
    layer: bytes
    sbom_data: bytes

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, user: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=creds(user), timeout=30)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("web-ui")
    htpasswd = write_htpasswd(root / "htpasswd")
    config = write_config(root / "config.yml", auth=basic_auth(htpasswd))
    server = start_dockyard(root / "data", config=config)
    try:
        with httpx.Client(base_url=server.url, auth=creds("admin"), timeout=30) as c:
            v1 = push(c, "public/app", "v1")
            push(c, "public/app", "v2", extra={"annotations": {  # as `dockyard build` does
                "org.opencontainers.image.source": "https://git.example/catalogue.git",
                "org.opencontainers.image.revision": "0123456789abcdef0123"}})
            # an SBOM artifact referring to v1
            empty = b"{}"
            push_blob(c, "public/app", empty)
            sbom_data = json.dumps({"spdxVersion": "SPDX-2.3", "packages": [
                {"name": "openssl", "versionInfo": "3.0.15", "licenseConcluded": "Apache-2.0"},
                {"name": "zlib", "versionInfo": "1.3.1", "licenseConcluded": "Zlib"},
                {"name": XSS, "versionInfo": "6.6.6", "licenseConcluded": "NOASSERTION"},
            ]}).encode()
            push_blob(c, "public/app", sbom_data)
            sbom_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "artifactType": SBOM_TYPE,
                        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
                        "layers": [descriptor(SBOM_TYPE, sbom_data)],
                        "subject": {"mediaType": v1.media_type, "digest": v1.digest,
                                    "size": v1.size}}
            sbom_payload = canonical(sbom_doc)
            sbom = Pushed(sbom_payload, digest_of(sbom_payload), OCI_MANIFEST)
            r = put_manifest(c, "public/app", sbom.digest, sbom.payload, OCI_MANIFEST)
            assert r.status_code == 201, r.text
            # a multi-platform index
            amd = push(c, "public/multi", "amd64-only")
            arm = image_manifest(c, "public/multi", config=config_blob("arm"))
            assert put_manifest(c, "public/multi", arm.digest, arm.payload,
                                arm.media_type).status_code == 201
            index = index_of([amd, arm])
            assert put_manifest(c, "public/multi", "latest", index.payload,
                                index.media_type).status_code == 201
            push(c, "private/secret", "hidden-tag")
            push(c, "public/xss", "v1", config=json.dumps({
                "architecture": "amd64", "os": "linux",
                "config": {"Labels": {"evil": XSS}, "Env": [f"X={XSS}"]},
                "history": [{"created_by": XSS}]}).encode(),
                extra={"annotations": {"org.example.note": XSS}})
            for tag in ("keep", "doomed"):
                push(c, "public/todelete", tag)
            push(c, "public/gone", "only")
            layer = tar_layer()
            push_blob(c, "public/files", layer)
            files = image_manifest(c, "public/files", extra={"layers": [
                descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)]})
            assert put_manifest(c, "public/files", "v1", files.payload,
                                files.media_type).status_code == 201
            push(c, "public/guarded", "stays")
        yield Registry(server, config, v1, sbom, index, layer, sbom_data)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module (the only one using it). Not session-scoped:
    Playwright's sync API keeps an event loop running on the main thread until it
    stops, which would break every asyncio test that runs after this module."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, registry: Registry) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the registry; CSP bypassed for axe only."""
    context = browser.new_context(base_url=registry.url, bypass_csp=True)
    dialogs: list[str] = []
    pg = context.new_page()
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    context.close()
    assert not dialogs, f"a page ran script from content: {dialogs}"


def check(page: Any, name: str) -> None:
    """Screenshot the page at both widths, light and dark, and assert axe finds nothing
    serious in either scheme (contrast differs between them)."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        screenshot(page, name, dark=scheme == "dark")
        assert axe_violations(page) == [], f"{name} ({scheme})"
    page.emulate_media(color_scheme="light")


def log_in(page: Any, user: str) -> None:
    page.goto("/ui/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(USERS[user][0])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"Signed in as {user}")).to_be_visible()


def test_root_redirects_and_home_shows_counts(page: Any) -> None:
    page.goto("/")
    assert page.url.endswith("/ui/")
    expect(page.get_by_role("heading", name="Registry")).to_be_visible()
    stats = page.locator("dl.stats")
    expect(stats).to_contain_text("Storage used")
    expect(page.get_by_role("link", name="public/app")).to_be_visible()
    check(page, "home")


def stat(page: Any, label: str) -> int:
    return int(page.locator("dl.stats div", has_text=label).locator("dd").inner_text())


def test_home_counts_only_what_the_visitor_sees(page: Any) -> None:
    page.goto("/ui/")
    anonymous = stat(page, "Repositories"), stat(page, "Tags")
    assert page.locator("dl.stats div", has_text="Blobs").count() == 0
    log_in(page, "admin")  # admins pull everything: the registry's own totals
    page.goto("/ui/")
    assert (stat(page, "Repositories"), stat(page, "Tags")) == (
        anonymous[0] + 1, anonymous[1] + 1)  # private/secret and its one tag
    assert stat(page, "Blobs") > 0


def test_browse_home_repository_tag_image_referrer(page: Any, registry: Registry) -> None:
    page.goto("/ui/")
    page.get_by_role("link", name="public/app", exact=True).first.click()
    expect(page.get_by_role("heading", name="public/app")).to_be_visible()
    rows = page.locator("table.list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("v1")
    expect(rows.nth(0)).to_contain_text("image")
    expect(rows.nth(0)).to_contain_text(registry.app_v1.digest[:19])
    # the build's source and revision, where the manifest names them
    expect(page.get_by_role("columnheader", name="Built from")).to_be_visible()
    expect(rows.nth(1)).to_contain_text("https://git.example/catalogue.git@0123456789ab")
    expect(page.locator(".copyable code").first).to_contain_text("docker pull 127.0.0.1:")
    check(page, "repository")

    page.get_by_role("link", name="v1", exact=True).click()
    expect(page.get_by_role("heading", name="public/app:v1")).to_be_visible()
    main = page.locator("main")
    for text in ("/usr/bin/app", "--serve --port=8080", "APP_MODE=production",
                 "org.opencontainers.image.title", "COPY app /usr/bin/app", "linux/amd64",
                 "2026-11-30T12:00:00Z", SBOM_TYPE, registry.app_v1.digest):
        expect(main).to_contain_text(text)
    layers = page.locator("section[aria-labelledby=layers-h] tbody tr")
    expect(layers).to_have_count(2)
    expect(layers.first).to_contain_text("512 B")
    # history rows that made a layer carry its size; the ENV line made none
    history = page.locator("section[aria-labelledby=hist-h] tbody tr")
    expect(history.nth(1)).to_contain_text("—")
    expect(history.nth(2)).to_contain_text("512 B")
    check(page, "image")

    page.locator("section[aria-labelledby=ref-h] a").first.click()
    expect(page.locator("main")).to_contain_text(registry.sbom.digest)
    expect(page.locator(".kind").first).to_have_text("artifact")
    expect(page.locator("main")).to_contain_text("Refers to")
    packages = page.locator("#sbom-table tbody tr")
    expect(packages).to_have_count(3)
    expect(packages.nth(2)).to_contain_text(XSS)  # a package name is text too
    check(page, "artifact")
    page.get_by_label("Filter packages").press_sequentially("ssl")
    expect(page.locator("#sbom-table tbody tr:visible")).to_have_count(1)
    expect(page.locator("#sbom-table tbody tr:visible")).to_contain_text("3.0.15")


def test_layer_page_lists_its_files_and_downloads(page: Any, registry: Registry) -> None:
    page.goto("/ui/r/public/files")
    page.get_by_role("link", name="v1", exact=True).click()
    page.locator("section[aria-labelledby=layers-h] tbody a").first.click()
    expect(page.get_by_role("heading", name="Layer of public/files")).to_be_visible()
    main = page.locator("main")
    expect(main).to_contain_text("tar+gzip")
    rows = page.locator("#files-table tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.nth(0)).to_contain_text("drwxr-xr-x")
    expect(rows.nth(1)).to_contain_text("usr/bin/app")
    expect(rows.nth(1)).to_contain_text("1.9 KiB")
    expect(rows.nth(2)).to_contain_text("usr/bin/run → app")
    expect(rows.nth(3)).to_contain_text(f"etc/{XSS}.conf")  # a file name is text
    expect(rows.nth(4)).to_contain_text("deletes etc/old.conf of the layers below")
    check(page, "layer")
    page.get_by_label("Filter paths").press_sequentially("bin")
    expect(page.locator("#files-table tbody tr:visible")).to_have_count(3)
    with page.expect_download() as info:
        page.get_by_role("link", name="the stored bytes").click()
    assert Path(info.value.path()).read_bytes() == registry.layer
    # a session cookie may have authorized it: no shared cache may keep it for others
    got = page.request.get(f"/ui/r/public/files/-/blobs/{digest_of(registry.layer)}/download")
    assert got.headers["cache-control"] == "private, max-age=31536000"
    # bytes that are no tar archive get a page saying so
    page.goto(f"/ui/r/public/app/-/blobs/{digest_of(registry.sbom_data)}")
    expect(page.locator("main")).to_contain_text("No file list: not a tar archive")
    # a blob of another repository is not this one's, whoever asks
    r = page.goto(f"/ui/r/public/app/-/blobs/{digest_of(registry.layer)}")
    assert r is not None
    assert r.status == 404
    expect(page.locator("main")).to_contain_text("is not in public/app")


def test_index_lists_platforms_linking_to_images(page: Any, registry: Registry) -> None:
    page.goto("/ui/r/public/multi")
    latest = page.locator("tr", has_text="latest")
    expect(latest).to_contain_text("index")
    expect(latest).to_contain_text("linux/amd64, linux/arm64")
    page.get_by_role("link", name="latest", exact=True).click()
    platforms = page.locator("section[aria-labelledby=platforms-h] tbody tr")
    expect(platforms).to_have_count(2)
    check(page, "index")
    platforms.nth(1).get_by_role("link").click()
    expect(page.locator(".kind").first).to_have_text("image")
    expect(page.locator("main")).to_contain_text("org.opencontainers.image.title")


def test_search_as_you_type_and_without_script(page: Any, browser: Any,
                                               registry: Registry) -> None:
    page.goto("/ui/")
    box = page.get_by_label("Search repositories and tags")
    box.press_sequentially("multi")
    results = page.locator("#results")
    expect(results.get_by_role("link", name="public/multi")).to_be_visible()
    box.fill("")
    box.press_sequentially("amd64-o")
    expect(results.get_by_role("link", name="public/multi:amd64-only")).to_be_visible()
    expect(results.get_by_role("link", name="public/multi", exact=True)).to_have_count(0)
    check(page, "search")
    # the same answer with JavaScript off: the form submits and the server renders it
    context = browser.new_context(base_url=registry.url, java_script_enabled=False)
    try:
        plain = context.new_page()
        plain.goto("/ui/")
        plain.get_by_label("Search repositories and tags").fill("v2")
        plain.get_by_role("button", name="Search").click()
        assert "/ui/search?q=v2" in plain.url
        expect(plain.locator("#results").get_by_role("link", name="public/app:v2")
               ).to_be_visible()
        # without script, copy buttons stay hidden: nothing that cannot work is shown
        plain.goto("/ui/r/public/app")
        expect(plain.locator("button.copy").first).to_be_hidden()
        # and the SBOM's package filter is done by the server
        plain.goto(f"/ui/r/public/app/-/manifests/{registry.sbom.digest}")
        plain.get_by_label("Filter packages").fill("zli")
        plain.get_by_role("button", name="Filter").click()
        expect(plain.locator("#sbom-table tbody tr")).to_have_count(1)
        expect(plain.locator("#sbom-table tbody tr")).to_contain_text("Zlib")
    finally:
        context.close()


def test_copy_pull_command(page: Any, registry: Registry) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=registry.url)
    page.goto("/ui/r/public/app")
    button = page.get_by_role("button", name="Copy pull command")
    button.click()
    expect(button).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(r"docker pull 127\.0\.0\.1:\d+/public/app:v1", copied), copied


def test_repository_list_sorts_filters_and_hides_private(page: Any) -> None:
    page.goto("/ui/repositories")
    names = page.locator("table.list tbody tr td:first-child")
    shown = names.all_inner_texts()
    assert shown == sorted(shown)
    assert "private/secret" not in shown
    assert "public/app" in shown
    check(page, "repositories")
    page.get_by_role("link", name="Tags").click()  # most tags first
    first = names.first.inner_text()
    assert first in ("public/app", "public/multi", "public/todelete")
    page.get_by_label("Filter").fill("public/m*")
    page.get_by_role("button", name="Filter").click()
    assert names.all_inner_texts() == ["public/multi"]


def test_private_repository_is_invisible_to_anonymous(page: Any, registry: Registry) -> None:
    for url in ("/ui/", "/ui/repositories", "/ui/search?q=secret",
                "/ui/search?q=hidden", "/ui/repositories?q=private/*"):
        page.goto(url)
        expect(page.locator("main")).not_to_contain_text("private/secret")
        expect(page.locator("main")).not_to_contain_text("hidden-tag")
    blob = f"/ui/r/private/secret/-/blobs/{digest_of(registry.layer)}"
    for url in ("/ui/r/private/secret", "/ui/r/private/secret/-/tags/hidden-tag",
                f"/ui/r/private/secret/-/manifests/{registry.app_v1.digest}",
                blob, blob + "/download"):
        page.goto(url)
        assert "/ui/login?next=" in page.url, url
        expect(page.locator("main")).not_to_contain_text("hidden-tag")
    check(page, "login")
    # logged in, the same direct URL shows it (the policy: authenticated users pull)
    log_in(page, "reader")
    page.goto("/ui/r/private/secret")
    expect(page.locator("main")).to_contain_text("hidden-tag")
    page.goto("/ui/search?q=hidden")
    expect(page.locator("#results")).to_contain_text("private/secret:hidden-tag")


def test_login_redirects_back_and_wrong_password_is_refused(page: Any) -> None:
    page.goto("/ui/r/private/secret")
    page.get_by_label("User name").fill("reader")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill(USERS["reader"][0])
    page.get_by_role("button", name="Log in").click()
    assert page.url.endswith("/ui/r/private/secret")
    cookie = next(c for c in page.context.cookies() if c["name"] == "dockyard_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.goto("/ui/r/private/secret")
    assert "/ui/login" in page.url


def test_labels_and_annotations_with_html_are_text(page: Any) -> None:
    page.goto("/ui/r/public/xss/-/tags/v1")
    main = page.locator("main")
    expect(main.locator("table.kv td", has_text=XSS)).to_have_count(2)  # label, annotation
    expect(main.locator("ul.mono li")).to_have_text(f"X={XSS}")
    expect(main.locator("code.cmd")).to_have_text(XSS)
    # no element came out of the content: one script (ours), no img at all
    assert page.locator("script").count() == 1
    assert page.locator("main img").count() == 0
    check(page, "escaping")


def test_admin_deletes_a_tag_then_the_repository(page: Any, registry: Registry) -> None:
    log_in(page, "admin")
    page.goto("/ui/r/public/todelete")
    page.get_by_role("link", name="Delete tag doomed").click()
    expect(page.get_by_role("heading")).to_have_text("Delete tag public/todelete:doomed?")
    expect(page.locator("main")).to_contain_text("sha256:")
    check(page, "confirm-tag")
    page.get_by_role("button", name="Delete tag doomed").click()
    expect(page.get_by_role("status")).to_contain_text("public/todelete:doomed is deleted")
    with registry.api() as api:
        assert api.get("/v2/public/todelete/tags/list").json()["tags"] == ["keep"]
    page.goto("/ui/r/public/todelete")
    expect(page.locator("table.list tbody tr")).to_have_count(1)

    page.get_by_role("link", name="Delete repository").click()
    expect(page.locator("main")).to_contain_text("keep")
    check(page, "confirm-repository")
    page.get_by_role("button", name="Delete repository public/todelete").click()
    expect(page.get_by_role("status")).to_contain_text("public/todelete is deleted")
    with registry.api() as api:
        assert api.get("/v2/public/todelete/tags/list").status_code == 404
    page.goto("/ui/repositories")
    expect(page.locator("main")).not_to_contain_text("public/todelete")


def test_user_without_delete_sees_no_button_and_forged_posts_are_refused(
        page: Any, registry: Registry) -> None:
    log_in(page, "builder")
    page.goto("/ui/r/public/guarded")
    expect(page.locator("main")).to_contain_text("stays")
    expect(page.get_by_role("link", name=re.compile("Delete"))).to_have_count(0)
    page.goto("/ui/r/public/guarded/-/tags/stays")
    expect(page.get_by_role("link", name=re.compile("Delete"))).to_have_count(0)
    response = page.goto("/ui/r/public/guarded/-/delete-tag/stays")
    assert response.status == 403
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    # with a valid CSRF token of their own session: the policy still refuses
    for url in ("/ui/r/public/guarded/-/delete-tag/stays", "/ui/r/public/guarded/-/delete"):
        r = page.request.post(url, form={"csrf": csrf})
        assert r.status == 403, url
    # an admin's session without (or with a wrong) CSRF token is refused too
    log_in(page, "admin")
    for form in ({}, {"csrf": csrf}, {"csrf": "forged"}):
        r = page.request.post("/ui/r/public/guarded/-/delete", form=form)
        assert r.status == 403, form
        r = page.request.post("/ui/r/public/guarded/-/delete-tag/stays", form=form)
        assert r.status == 403, form
    # anonymous (no session at all)
    r = httpx.post(registry.url + "/ui/r/public/guarded/-/delete", data={"csrf": csrf})
    assert r.status_code == 403
    with registry.api() as api:
        assert api.get("/v2/public/guarded/tags/list").json()["tags"] == ["stays"]


def _job_names(api: httpx.Client) -> set[str]:
    r = api.get("/admin/v1/jobs")
    assert r.status_code == 200, r.text
    return {job["name"] for job in r.json()["jobs"] if job["runs"]}


def test_operations_page_for_admins_only(page: Any, registry: Registry) -> None:
    with registry.api() as api:  # an upload session left open
        r = api.post("/v2/public/app/blobs/uploads/")
        assert r.status_code == 202
        r = api.patch(r.headers["Location"], content=b"x" * 3000,
                      headers={"Content-Range": "0-2999"})
        assert r.status_code == 202, r.text
    for _ in range(2):  # two collections beside the running server: a history, a trend
        subprocess.run([sys.executable, "-m", "dockyard", "gc", "--config",
                        str(registry.config), "--data", str(registry.server.data),
                        "--grace", "0s"], check=True, capture_output=True, timeout=120)
    with registry.api() as api:  # the server's own jobs first look 15-30 s after start
        deadline = time.monotonic() + 90
        while not {"gc", "uploads.purge"} <= _job_names(api):
            assert time.monotonic() < deadline, api.get("/admin/v1/jobs").text
            time.sleep(0.5)
        gc_runs = api.get("/admin/v1/jobs", params={"job": "gc", "n": "1"}).json()["jobs"]
        assert [j["name"] for j in gc_runs] == ["gc"]
        assert [r["outcome"] for r in gc_runs[0]["runs"]] == ["ok"]
        bad = api.get("/admin/v1/jobs", params={"n": "-1"})
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    with registry.api("reader") as api:
        assert api.get("/admin/v1/jobs").status_code == 403
    log_in(page, "reader")
    assert page.goto("/ui/operations").status == 403
    log_in(page, "admin")
    page.goto("/ui/operations")
    main = page.locator("main")
    jobs = main.locator("#jobs")
    expect(jobs.locator("caption")).to_have_text("The last run of each background job")
    for name, summary in (("gc", re.compile(r"\d+ manifests and \d+ blobs removed")),
                          ("uploads.purge", re.compile(r"\d+ expired upload sessions"))):
        row = jobs.locator("tbody tr").filter(
            has=page.locator("td.name", has_text=re.compile(f"^{re.escape(name)}$")))
        expect(row).to_have_count(1)
        expect(row.locator("td.outcome")).to_have_text("ok")
        expect(row.locator("td.summary")).to_have_text(summary)
    expect(main.locator("#builds")).to_have_count(0)  # no scheduled rebuilds here
    expect(main).to_contain_text("Metadata store: ready")
    expect(main).to_contain_text("Blob storage: ready")
    expect(main.locator("svg.chart rect.repo").first).to_be_visible()
    uploads = main.locator("section[aria-labelledby=up-h] tbody tr")
    expect(uploads).to_have_count(1)
    expect(uploads).to_contain_text("public/app")
    expect(uploads).to_contain_text("2.9 KiB")
    # ours, and the server's own gc job's (it runs at start too)
    assert main.locator("#collections tbody tr").count() >= 2
    expect(main.locator("svg.trend polyline")).to_have_count(1)
    check(page, "operations")


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_search_finds_tags_past_hundreds_the_visitor_may_not_see(
        tmp_path: Path, store: str) -> None:
    # 501 matching tags in a repository anonymous visitors may not see sort before the
    # one they may: the search used to take the first 500 matches, then drop the
    # invisible ones, and found nothing
    with contextlib.ExitStack() as stack:
        env = {}
        if store == "postgresql":
            if (reason := postgres_unavailable()) is not None:
                pytest.skip(reason)
            env["DOCKYARD_DATABASE_URL"] = stack.enter_context(running_postgres())
        search_past_invisible_tags(tmp_path, env)


def search_past_invisible_tags(tmp_path: Path, env: dict[str, str]) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    server = start_dockyard(tmp_path / "data", env=env, config=write_config(
        tmp_path / "config.yml", auth=basic_auth(htpasswd)))
    try:
        with httpx.Client(base_url=server.url, auth=creds("admin"), timeout=30) as c:
            hidden = push(c, "private/many", "many-000")
            for n in range(1, 501):
                r = put_manifest(c, "private/many", f"many-{n:03}", hidden.payload,
                                 hidden.media_type)
                assert r.status_code == 201, r.text
            push(c, "public/few", "many-public")
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            page = anonymous.get("/ui/search", params={"q": "many", "partial": "1"})
        assert page.status_code == 200
        assert "public/few:many-public" in page.text
        assert "private/many" not in page.text
        with httpx.Client(base_url=server.url, timeout=30) as reader:
            login = reader.get("/ui/login")
            token = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert token is not None, login.text[:2000]
            r = reader.post("/ui/login", data={
                "username": "reader", "password": USERS["reader"][0],
                "csrf": token.group(1), "next": "/ui/"})
            assert r.status_code in (302, 303), r.text[:500]
            page = reader.get("/ui/search", params={"q": "many", "partial": "1"})
        assert "private/many:many-000" in page.text  # a reader sees them, first by name
    finally:
        server.stop()
