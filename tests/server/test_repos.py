"""Repositories, authentication, unknown routes and the access log."""

from __future__ import annotations

from typing import Any

import httpx

from support.server import ServerProc


def test_create_list_info_delete(live: ServerProc, client: httpx.Client) -> None:
    r = client.post("/v1/repos", json={"name": "alpha"})
    assert r.status_code == 201
    assert r.json() == {"name": "alpha", "head": "0"}
    assert r.headers["X-Repo-Head"] == "0"

    listed = {x["name"]: x for x in client.get("/v1/repos").json()["repos"]}
    assert listed["alpha"]["head"] == "0"
    assert listed["alpha"]["created_at"].endswith("Z")

    live.put("alpha", "a.txt", b"abc")
    live.put("alpha", "d/b.txt", b"12345")
    info = client.get("/v1/repos/alpha")
    assert info.status_code == 200
    assert info.headers["X-Repo-Head"] == "2"
    body = info.json()
    assert (body["name"], body["head"], body["file_count"], body["bytes"]) == ("alpha", "2", 2, 8)
    assert body["max_file_size"] == 1 << 30  # (--max-file-size's default)

    assert client.delete("/v1/repos/alpha").status_code == 204
    assert client.get("/v1/repos/alpha").status_code == 404
    assert client.delete("/v1/repos/alpha").status_code == 404
    assert "alpha" not in {x["name"] for x in client.get("/v1/repos").json()["repos"]}

    # A recreated repository starts empty, its heads counted on from the deleted one's:
    # a client's position in the old one is never taken for one in the new one.
    assert client.post("/v1/repos", json={"name": "alpha"}).json()["head"] == "3"
    assert client.get("/v1/repos/alpha/tree").json()["entries"] == []
    for since in ("0", "2"):
        gone = client.get("/v1/repos/alpha/changes", params={"since": since})
        assert gone.status_code == 410, since
    assert client.get("/v1/repos/alpha/tree", params={"at": "2"}).status_code == 410
    assert client.get("/v1/repos/alpha/changes", params={"since": "3"}).json() == {
        "head": "3",
        "changes": [],
    }
    live.put("alpha", "c.txt", b"c")
    assert client.get("/v1/repos/alpha").json()["head"] == "4"
    # ... and again for a name deleted twice.
    assert client.delete("/v1/repos/alpha").status_code == 204
    assert client.post("/v1/repos", json={"name": "alpha"}).json()["head"] == "5"


def test_create_twice_is_409(client: httpx.Client, repo: str) -> None:
    r = client.post("/v1/repos", json={"name": repo})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "repo_exists"


def test_bad_repo_names_and_bodies(client: httpx.Client) -> None:
    for name in ["", ".hidden", "-x", "a/b", "a b", "x" * 101, 7]:
        r = client.post("/v1/repos", json={"name": name})
        assert r.status_code == 422, name
        assert r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/repos", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_json"
    r = client.post("/v1/repos", json=["name"])
    assert r.status_code == 422


def test_unknown_repo_is_404_everywhere(client: httpx.Client) -> None:
    zero = "0" * 64
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/repos/nope", {}),
        ("GET", "/v1/repos/nope/tree", {}),
        ("GET", "/v1/repos/nope/files/a", {}),
        ("HEAD", "/v1/repos/nope/files/a", {}),
        ("PUT", "/v1/repos/nope/files/a", {"content": b"x"}),
        ("DELETE", "/v1/repos/nope/files/a", {}),
        ("POST", "/v1/repos/nope/read", {"json": {"paths": []}}),
        ("PUT", f"/v1/repos/nope/blobs/{zero}", {"content": b""}),
        (
            "POST",
            "/v1/repos/nope/commits",
            {"json": {"operations": [{"op": "mkdir", "path": "d"}]}},
        ),
        ("GET", "/v1/repos/nope/changes?since=0", {}),
    ]
    for method, url, kwargs in cases:
        r = client.request(method, url, **kwargs)
        assert r.status_code == 404, (method, url)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "not_found"
            assert "nope" in r.json()["error"]["message"]


def test_authentication(live: ServerProc) -> None:
    with httpx.Client(base_url=live.url) as anon:
        r = anon.get("/v1/repos")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = anon.get("/v1/repos", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = anon.get("/v1/repos", headers={"Authorization": f"Basic {live.token}"})
        assert r.status_code == 401
        r = anon.get("/v1/repos", headers={"Authorization": f"Bearer {live.token}"})
        assert r.status_code == 200


def test_unknown_routes_and_methods_are_json(client: httpx.Client, repo: str) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = client.patch(f"/v1/repos/{repo}")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_access_log_has_one_line_per_request_and_no_token(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    mark = live.mark()
    client.put(f"/v1/repos/{repo}/files/a%20b", content=b"1")
    client.get(f"/v1/repos/{repo}/files/missing")
    client.get(f"/v1/repos/{repo}/tree", params={"recursive": "1", "secret": "s3cr3t"})
    with httpx.Client(base_url=live.url) as anon:
        anon.get("/v1/repos")
    lines = live.requests(since=mark)
    assert [(x.method, x.path, x.status) for x in lines] == [
        ("PUT", f"/v1/repos/{repo}/files/a%20b", 201),
        ("GET", f"/v1/repos/{repo}/files/missing", 404),
        ("GET", f"/v1/repos/{repo}/tree", 200),
        ("GET", "/v1/repos", 401),
    ]
    log = live.log_path.read_text()
    assert live.token not in log
    assert "s3cr3t" not in log
