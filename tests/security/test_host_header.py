"""The server never builds a URL from the request's Host header, which the client
chooses (the security probe): a Terminal Use upload URL, signed with the token, pointed
wherever the header said, and a path without its slash was redirected there; so did the
`Link` pages of a Sentry file list, which a client follows with its token."""

from __future__ import annotations

import pytest

from repomount.remotes.registry import native_location
from support.server import ServerProc

EVIL = "attacker.example:443"


@pytest.mark.parametrize("kind", ["upload-url", "download-url"])
def test_a_presigned_url_names_this_server_whatever_the_host_header(
    live: ServerProc, kind: str
) -> None:
    with live.client() as c:
        fs_id = c.post("/terminaluse/filesystems", json={"project_id": "p"}).json()["id"]
        r = c.post(f"/terminaluse/filesystems/{fs_id}/{kind}", headers={"Host": EVIL})
        assert r.status_code == 200, r.text
        url = r.json()["url"]
        assert url.startswith(f"{live.url}/terminaluse/archives/{fs_id}?"), url
        assert "attacker" not in url


@pytest.mark.parametrize("level", ["organizations/acme", "projects/acme/web"])
def test_sentry_page_links_name_this_server_whatever_the_host_header(
    live: ServerProc, level: str
) -> None:
    with live.client() as c:
        version = f"host-{level.replace('/', '-')}"
        made = c.post(
            "/api/0/organizations/acme/releases/", json={"version": version, "projects": ["web"]}
        )
        assert made.status_code == 201, made.text
        files = f"/api/0/{level}/releases/{version}/files/"
        r = c.get(files, headers={"Host": EVIL})
        assert r.status_code == 200, r.text
        links = r.headers["link"]
        assert "attacker" not in links
        assert links.startswith(f"<{live.url}{files}?"), links


@pytest.mark.parametrize("path", ["/v1", "/relace/v1", "/terminaluse", "/api", "/v1/repos/"])
def test_no_redirect_repeats_the_host_header(live: ServerProc, path: str) -> None:
    with live.client() as c:
        for auth in ({}, {"Authorization": "Bearer nope"}):
            r = c.get(path, headers={"Host": EVIL, **auth})
            assert not 300 <= r.status_code < 400, (path, r.status_code, r.headers)
            assert "attacker" not in r.text and "attacker" not in str(r.headers)


@pytest.mark.parametrize("name", [".", "..", "%2e", "%2E%2e"])
def test_a_repo_url_naming_dot_or_dot_dot_is_refused_clearly(name: str) -> None:
    with pytest.raises(ValueError, match="is not a repo name"):
        native_location(f"http://127.0.0.1:8750/{name}")


@pytest.mark.parametrize("name", ["a%1bb", "a%00b", "a%0Ab"])
def test_a_repo_url_naming_a_control_character_is_refused_clearly(name: str) -> None:
    with pytest.raises(ValueError, match="holds the control character") as e:
        native_location(f"http://127.0.0.1:8750/{name}")
    assert str(e.value).isprintable()
