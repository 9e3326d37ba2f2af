"""Two clients racing conditional writes on one file: one winner per version, no damage."""

from __future__ import annotations

import threading

from support.server import ServerProc, file_url

ROUNDS = 50


def test_conditional_puts_race(live: ServerProc, repo: str) -> None:
    url = file_url(repo, "contended.txt")
    base = live.put(repo, "contended.txt", b"base")
    barrier = threading.Barrier(2)
    outcomes: dict[int, list[tuple[int, int, bytes]]] = {0: [], 1: []}  # (round, status, body)

    def racer(who: int) -> None:
        with live.client() as c:
            for n in range(ROUNDS):
                barrier.wait()
                version = c.head(url).headers["ETag"].strip('"')
                barrier.wait()  # both hold the same base version now
                body = f"round {n} by client {who} ".encode() * 100
                r = c.put(url, content=body, headers={"If-Match": f'"{version}"'})
                outcomes[who].append((n, r.status_code, body))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    winners = []
    for n in range(ROUNDS):
        statuses = sorted(outcomes[w][n][1] for w in (0, 1))
        assert statuses == [200, 412], f"round {n}: {statuses}"
        winners.append(next(outcomes[w][n][2] for w in (0, 1) if outcomes[w][n][1] == 200))

    with live.client() as c:
        assert c.get(f"/v1/repos/{repo}").json()["head"] == str(1 + ROUNDS)
        # Every version in history is exactly one winner's body, in order.
        for n, body in enumerate(winners):
            r = c.get(url, params={"at": str(2 + n)})
            assert r.content == body
        assert c.get(url, params={"at": "1"}).headers["ETag"] == f'"{base}"'
    assert live.get(repo, "contended.txt") == winners[-1]
