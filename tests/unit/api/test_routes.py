"""The route table decides scopes: the matched endpoint's data, never the path's text."""

from __future__ import annotations

import pytest

from dockyard.api.access import required_scope
from dockyard.api.routes import ROUTES, resolve

D = "sha256:" + "a" * 64
#: names that contain every route keyword of the table
TRICKY = ["team/blobs/uploads/x", "team/blobs", "team/uploads", "team/manifests/x",
          "team/tags/list", "team/referrers/r", "team/v2_catalog", "team/blobs/uploads"]

#: (method, path template, expected scope on the name) — the spec, written independently
#: of the route table: what each operation of the distribution-spec must require
CASES = [
    ("GET", "/v2/{n}/tags/list", "pull"),
    ("GET", "/v2/{n}/manifests/v1", "pull"),
    ("HEAD", "/v2/{n}/manifests/" + D, "pull"),
    ("PUT", "/v2/{n}/manifests/v1", "pull,push"),
    ("DELETE", "/v2/{n}/manifests/" + D, "delete"),
    ("DELETE", "/v2/{n}/manifests/v1", "delete"),
    ("POST", "/v2/{n}/blobs/uploads/", "pull,push"),
    ("GET", "/v2/{n}/blobs/uploads/0a1b", "pull,push"),
    ("PATCH", "/v2/{n}/blobs/uploads/0a1b", "pull,push"),
    ("PUT", "/v2/{n}/blobs/uploads/0a1b", "pull,push"),
    ("DELETE", "/v2/{n}/blobs/uploads/0a1b", "pull,push"),
    ("GET", "/v2/{n}/blobs/" + D, "pull"),
    ("HEAD", "/v2/{n}/blobs/" + D, "pull"),
    ("DELETE", "/v2/{n}/blobs/" + D, "delete"),
    ("GET", "/v2/{n}/referrers/" + D, "pull"),
    ("DELETE", "/admin/v1/repositories/{n}", "delete"),
    ("GET", "/admin/v1/sync/repositories/{n}", "pull"),
    ("GET", "/admin/v1/tags/{n}", "pull"),
]


@pytest.mark.parametrize("name", ["a", *TRICKY])
@pytest.mark.parametrize(("method", "template", "actions"), CASES)
def test_scope_comes_from_the_matched_route(name: str, method: str, template: str,
                                            actions: str) -> None:
    path = template.format(n=name)
    found = resolve(path)
    assert found is not None, path
    route, m = found
    assert m.group("name") == name
    endpoint = route.endpoints[method]
    assert str(required_scope(endpoint.access, name)) == f"repository:{name}:{actions}"


def test_scopes_without_a_name() -> None:
    for method, path, scope in [("GET", "/v2/", None), ("HEAD", "/v2", None),
                                ("GET", "/v2/_catalog", "registry:catalog:*"),
                                ("GET", "/admin/v1/sync", "registry:catalog:*"),
                                ("GET", "/admin/v1/jobs", "registry:catalog:*")]:
        found = resolve(path)
        assert found is not None
        access = found[0].endpoints[method].access
        got = required_scope(access, "")
        assert (None if got is None else str(got)) == scope


def test_every_delete_endpoint_needs_delete_except_cancelling_an_upload() -> None:
    for route in ROUTES:
        for method, endpoint in route.endpoints.items():
            scope = required_scope(endpoint.access, "x")
            if method == "DELETE" and route.id != "upload":
                assert scope is not None, route.id
                assert scope.actions == {"delete"}, route.id
            if method in ("GET", "HEAD") and scope is not None and scope.type == "repository":
                # an upload session's status is part of pushing, as its other endpoints
                want = {"pull", "push"} if route.id == "upload" else {"pull"}
                assert scope.actions == want, route.id
