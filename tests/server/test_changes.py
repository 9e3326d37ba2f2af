"""The change feed: what changed since a head, long-polling, and 410 for lost history."""

from __future__ import annotations

import threading
import time

import httpx

from support.server import ServerFactory, ServerProc, file_url
from support.util import sha, wait_until


def feed(client: httpx.Client, repo: str, **params: str) -> httpx.Response:
    return client.get(f"/v1/repos/{repo}/changes", params=params)


def test_changes_since(live: ServerProc, client: httpx.Client, repo: str) -> None:
    assert feed(client, repo).json() == {"head": "0", "changes": []}
    live.put(repo, "d/a", b"1")  # 1
    client.post(
        f"/v1/repos/{repo}/commits",
        json={
            "operations": [
                {"op": "rename", "from": "d", "to": "e"},
                {"op": "mkdir", "path": "m"},
            ]
        },
    ).raise_for_status()  # 2
    client.delete(file_url(repo, "e/a")).raise_for_status()  # 3

    r = feed(client, repo, since="0")
    assert r.headers["X-Repo-Head"] == "3"
    body = r.json()
    assert body["head"] == "3"
    assert [(c["head"], c["path"], c["op"], c["version"]) for c in body["changes"]] == [
        ("1", "d", "mkdir", None),
        ("1", "d/a", "write", sha(b"1")),
        ("2", "d", "delete", None),
        ("2", "d/a", "delete", None),
        ("2", "e", "mkdir", None),
        ("2", "e/a", "write", sha(b"1")),
        ("2", "m", "mkdir", None),
        ("3", "e/a", "delete", None),
    ]
    assert [c["path"] for c in feed(client, repo, since="2").json()["changes"]] == ["e/a"]
    assert feed(client, repo, since="3").json() == {"head": "3", "changes": []}
    assert feed(client, repo).json() == {"head": "3", "changes": []}
    for since in ["x", "-1"]:
        assert feed(client, repo, since=since).status_code == 422
    assert feed(client, repo, since="0", wait="soon").status_code == 422
    r = feed(client, repo, since="9")  # a head this repo never had: re-list
    assert r.status_code == 410


def test_long_poll_wakes_on_commit(live: ServerProc, client: httpx.Client, repo: str) -> None:
    answered: list[tuple[httpx.Response, float]] = []

    def poll() -> None:
        r = feed(client, repo, since="0", wait="20")
        answered.append((r, time.monotonic()))

    before = live.connections()
    poller = threading.Thread(target=poll)
    poller.start()
    wait_until(lambda: live.holds_a_request(before), 10, "the server to hold the long-poll")
    assert not answered
    committed = time.monotonic()
    live.put(repo, "late", b"x")
    poller.join(10)
    ((r, at),) = answered
    assert r.status_code == 200
    assert [c["path"] for c in r.json()["changes"]] == ["late"]
    assert committed < at < committed + 5


def test_long_poll_times_out_empty(client: httpx.Client, repo: str) -> None:
    start = time.monotonic()
    r = feed(client, repo, since="0", wait="0.5")
    assert 0.4 < time.monotonic() - start < 5
    assert r.json() == {"head": "0", "changes": []}


def test_too_old_since_is_410(server_factory: ServerFactory) -> None:
    live = server_factory(["--history", "3"])
    live.create_repo("r")
    for i in range(6):
        live.put("r", f"f{i}", b"x")  # heads 1..6, history kept from 3
    with live.client() as c:
        assert [x["path"] for x in feed(c, "r", since="3").json()["changes"]] == ["f3", "f4", "f5"]
        r = feed(c, "r", since="2")
        assert r.status_code == 410
        error = r.json()["error"]
        assert (error["code"], error["oldest"]) == ("gone", "3")


def test_sigterm_ends_long_polls_and_exits_0(server: ServerProc) -> None:
    server.create_repo("r")
    answers: list[int] = []

    def poll() -> None:
        with server.client() as c:
            answers.append(feed(c, "r", since="0", wait="60").status_code)

    before = server.connections()
    poller = threading.Thread(target=poll)
    poller.start()
    wait_until(lambda: server.holds_a_request(before), 10, "the server to hold the long-poll")
    start = time.monotonic()
    server.stop()
    poller.join(10)
    assert time.monotonic() - start < 5
    assert answers == [200]
    assert server.returncode == 0
