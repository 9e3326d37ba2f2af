"""The Sentry face where `sentry-cli` does not go: renames (PUT), downloads
(`?download=1`), the refusals in Sentry's shapes (a 4xx with `{"detail": ...}` or a
serializer's fields, never a 500, nothing changed), pagination's edges, project links,
and how names that are URLs are kept."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import httpx
import pytest

from support.server import ServerProc

_names = itertools.count()
NOT_FOUND = {"detail": "The requested resource does not exist"}
EXISTS = {"detail": "A file matching this name already exists for the given release"}


@pytest.fixture
def c(live: ServerProc) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{live.url}/api/0", headers={"Authorization": f"Bearer {live.token}"}
    ) as client:
        yield client


@pytest.fixture
def release(c: httpx.Client) -> str:
    version = f"r{next(_names)}"
    r = c.post("/projects/acme/web/releases/", json={"version": version})
    assert r.status_code == 201, r.text
    return version


def files_url(release: str, project: str | None = "web") -> str:
    level = f"/projects/acme/{project}" if project else "/organizations/acme"
    return f"{level}/releases/{release}/files/"


def upload(c: httpx.Client, release: str, name: str, data: bytes, **fields: Any) -> httpx.Response:
    form = {"name": name, **fields}
    return c.post(files_url(release), data=form, files={"file": ("x", data, "text/javascript")})


def test_rename_keeps_the_id_and_refuses_what_sentry_refuses(
    c: httpx.Client, live: ServerProc, release: str
) -> None:
    made = upload(c, release, "~/a/app.js", b"app", header="Sourcemap: app.js.map").json()
    taken = upload(c, release, "~/b.js", b"b").json()
    url = files_url(release) + made["id"] + "/"
    r = c.put(url, json={"name": "~/c/app.js"})
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("id", "name", "sha1", "headers")} == {
        "id": made["id"],
        "name": "~/c/app.js",
        "sha1": hashlib.sha1(b"app").hexdigest(),
        "headers": {"Content-Type": "text/javascript", "Sourcemap": "app.js.map"},
    }
    assert live.tree(release) == {"~/c/app.js": b"app", "~/b.js": b"b"}  # ~/a went with it
    refusals = [
        (
            c.put(files_url(release) + "abc/", json={"name": "x"}),
            400,
            {"detail": "Can only update release files with integer IDs"},
        ),
        (c.put(url, json={}), 400, {"name": ["This field is required."]}),
        (
            c.put(url, json={"name": "x" * 201}),
            400,
            {"name": ["Ensure this field has no more than 200 characters."]},
        ),
        (c.put(url, json={"name": taken["name"]}), 409, EXISTS),
        (c.put(files_url(release) + "12345/", json={"name": "x"}), 404, NOT_FOUND),
        (c.put(url, content=b"{nope"), 400, None),
    ]
    for response, status, body in refusals:
        assert response.status_code == status, response.text
        assert body is None or response.json() == body
    assert live.tree(release) == {"~/c/app.js": b"app", "~/b.js": b"b"}


def test_download_and_metadata(c: httpx.Client, release: str) -> None:
    made = upload(c, release, "~/static/app.min.js", b"x" * 1000).json()
    url = files_url(release, project=None) + made["id"] + "/"
    meta = c.get(url)
    assert meta.status_code == 200 and meta.json() == made
    got = c.get(url, params={"download": "1"})
    assert got.status_code == 200 and got.content == b"x" * 1000
    assert got.headers["content-type"] == "application/octet-stream"  # as Sentry's lookup
    assert got.headers["content-disposition"] == 'attachment; filename="app.min.js"'


def test_a_name_latin_1_cannot_hold_downloads(c: httpx.Client, release: str) -> None:
    """Django MIME-encodes a header value latin-1 cannot hold (the name's part of
    `Content-Disposition`); the download itself is the file. Before: a 500, which a
    mount showed as EIO for every read of `€uro.js` or `中文.js` it had not cached."""
    for name in ("~/static/€uro.js", "~/中文.js", "~/emoji😀.js", "~/é.js"):
        made = upload(c, release, name, name.encode()).json()
        got = c.get(files_url(release) + made["id"] + "/", params={"download": "1"})
        assert got.status_code == 200, (name, got.text)
        assert got.content == name.encode()
        basename = name.rsplit("/", 1)[-1]
        disposition = str(make_header(decode_header(got.headers["content-disposition"])))
        assert disposition == f'attachment; filename="{basename}"'


def test_not_found_and_unauthorized_shapes(c: httpx.Client, live: ServerProc, release: str) -> None:
    made = upload(c, release, "~/a.js", b"a").json()
    for url in (
        files_url("no-such-release"),
        files_url(release) + "999/",
        files_url(release) + "not-a-number/",
        files_url(release, project="other"),  # not linked to that project
        "/organizations/acme/chunk-upload/",
        "/no/such/route/",
    ):
        r = c.get(url)
        assert (r.status_code, r.json()) == (404, NOT_FOUND), url
    assert c.delete(files_url(release) + "999/").status_code == 404
    for response in (c.post("/no/such/route/"), c.delete("/no/such/route/")):
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    wrong = c.patch(files_url(release))
    assert (wrong.status_code, wrong.json()) == (405, {"detail": 'Method "PATCH" not allowed.'})
    assert c.get(files_url(release, project=None)).status_code == 200  # the organization's
    anonymous = httpx.get(f"{live.url}/api/0{files_url(release)}")
    assert anonymous.status_code == 401
    assert c.delete(files_url(release) + made["id"] + "/").status_code == 204
    assert c.delete(files_url(release) + made["id"] + "/").status_code == 404
    assert live.tree(release) == {}


def test_upload_refusals_change_nothing(c: httpx.Client, live: ServerProc, release: str) -> None:
    upload(c, release, "~/kept.js", b"kept")
    refusals = [
        (c.post(files_url(release), data={"name": "~/x.js"}), "Missing uploaded file"),
        (upload(c, release, "file", b"x"), "File name must be specified"),
        (
            upload(c, release, "~/a\tb.js", b"x"),
            "File name must not contain special whitespace characters",
        ),
        (
            upload(c, release, "~/h.js", b"x", header="no colon"),
            "header value was not formatted correctly",
        ),
        (
            upload(c, release, "~/h.js", b"x", header="K: a\\b"),
            "header value must not contain special whitespace characters",
        ),
        (upload(c, release, "~//double.js", b"x"), None),  # no path: our own 400
        (upload(c, release, "~/kept.js/below.js", b"x"), None),  # a file is no directory
        (c.post(files_url(release), json={"name": "x"}), "Missing uploaded file"),
    ]
    for response, detail in refusals:
        assert response.status_code == 400, response.text
        assert detail is None or response.json() == {"detail": detail}
    again = upload(c, release, "~/kept.js", b"other")
    assert (again.status_code, again.json()) == (409, EXISTS)
    assert live.tree(release) == {"~/kept.js": b"kept"}


def test_urls_as_names_and_dists(c: httpx.Client, live: ServerProc, release: str) -> None:
    """`https://cdn/app.js` is kept at `https:/cdn/app.js`; a dist's files apart."""
    r = upload(c, release, "https://cdn.example.com/app.js", b"u", dist="d1")
    assert r.status_code == 201 and r.json()["name"] == "https://cdn.example.com/app.js"
    upload(c, release, "https://cdn.example.com/app.js", b"v")
    assert live.tree(release) == {"https:/cdn.example.com/app.js": b"v"}
    listed = c.get(files_url(release)).json()
    assert [(f["name"], f["dist"]) for f in listed] == [
        ("https://cdn.example.com/app.js", None),
        ("https://cdn.example.com/app.js", "d1"),
    ]
    assert upload(c, release, "https:/cdn.example.com/x.js", b"x").status_code == 400
    live.put(release, "native/new.js", b"n")  # written through another face: listed too
    (new,) = [f for f in c.get(files_url(release)).json() if f["name"] == "native/new.js"]
    assert (new["sha1"], new["size"], new["headers"]) == (hashlib.sha1(b"n").hexdigest(), 1, {})


def test_pages_and_their_links(c: httpx.Client, live: ServerProc, release: str) -> None:
    with live.client() as native:
        ops = [{"op": "write", "path": f"f{i}", "content_b64": ""} for i in range(5)]
        native.post(f"/v1/repos/{release}/commits", json={"operations": ops}).raise_for_status()
    first = c.get(files_url(release), params={"per_page": 2})
    base = f"{live.url}/api/0{files_url(release)}?per_page=2"
    assert first.headers["link"] == (
        f'<{base}&cursor=2:-1:1>; rel="previous"; results="false"; cursor="2:-1:1", '
        f'<{base}&cursor=2:1:0>; rel="next"; results="true"; cursor="2:1:0"'
    )
    names = []
    cursor = ""
    while True:
        page = c.get(files_url(release), params={"per_page": 2, "cursor": cursor})
        names += [f["name"] for f in page.json()]
        match = re.search(r'cursor="([^"]*)"[^<]*$', page.headers["link"])
        assert match is not None
        if 'rel="next"; results="false"' in page.headers["link"]:
            break
        cursor = match[1]
    assert names == [f"f{i}" for i in range(5)]
    q = c.get(files_url(release), params=[("query", "F1"), ("query", "f3")]).json()
    assert [f["name"] for f in q] == ["f1", "f3"]
    for params, detail in [
        ({"per_page": 101}, "Invalid per_page value. Cannot exceed 100."),
        ({"per_page": "x"}, "Invalid per_page parameter."),
        ({"cursor": "nope"}, "Invalid cursor parameter."),
        ({"cursor": "100:200:0"}, "Pagination offset too large"),
    ]:
        r = c.get(files_url(release), params=params)
        assert (r.status_code, r.json()) == (400, {"detail": detail}), params


def test_releases_created_checked_and_linked(c: httpx.Client) -> None:
    version = f"lib@{next(_names)}.0"
    org = c.post("/organizations/acme/releases/", json={"version": version, "projects": ["a"]})
    assert org.status_code == 201 and [p["slug"] for p in org.json()["projects"]] == ["a"]
    assert c.post("/projects/acme/a/releases/", json={"version": version}).status_code == 208
    assert c.post("/projects/acme/b/releases/", json={"version": version}).status_code == 201
    assert c.get(f"/projects/acme/b/releases/{version}/").json()["version"] == version
    assert c.get(f"/projects/acme/c/releases/{version}/").status_code == 404
    for body, field, message in [
        ({"version": "latest"}, "version", "Release with name latest is not allowed"),
        ({"version": "a/b"}, "version", "Release with name a/b is not allowed"),
        ({}, "version", "This field is required."),
        ({"version": "x" * 201}, "version", "Ensure this field has no more than 200 characters."),
        ({"version": "fine"}, "projects", "This field is required."),
    ]:
        r = c.post("/organizations/acme/releases/", json=body)
        assert (r.status_code, r.json()) == (400, {field: [message]}), body
