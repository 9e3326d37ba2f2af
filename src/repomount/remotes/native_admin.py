"""repomount's own server as a whole: creating, listing and deleting its repos (for
`repomount repo ...`). The same HttpClient as the mount's adapter (native.py): bearer
token, retries of what is safe to send again, typed errors; the same words for a
refused token or an unknown repo. docs/native-api.md is the contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from repomount.remotes.answers import json_object, parses
from repomount.remotes.errors import (
    Conflict,
    NotFound,
    ProtocolError,
    RemoteError,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.http import HttpClient, RetryPolicy
from repomount.remotes.native import no_repo_message, unauthorized_message
from repomount.remotes.native_wire import SERVICE, head_of

# A person waits at the terminal: a few quick tries, not a mount's patience.
ADMIN_RETRY = RetryPolicy(attempts=3, base_delay=0.25, max_delay=2.0)


@dataclass(frozen=True)
class RepoSummary:
    name: str
    head: str | None
    created_at: str | None = None


@parses(SERVICE)
def repo_summary(data: dict[str, Any]) -> RepoSummary:
    created = data.get("created_at")
    return RepoSummary(str(data["name"]), head_of(data["head"]), str(created) if created else None)


@parses(SERVICE)
def repo_summaries(data: dict[str, Any]) -> list[RepoSummary]:
    return [repo_summary(r) for r in data["repos"]]


class AdminError(Exception):
    """A request about repos failed; the message is one line for the user."""


class NativeServer:
    """The server at `base_url` (http(s)://HOST[:PORT]); `token` as for a mount."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        retry: RetryPolicy = ADMIN_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = HttpClient(self.base_url, token=token, retry=retry, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_repos(self) -> list[RepoSummary]:
        async with self._explained():
            return repo_summaries(json_object(await self._http.request("GET", "/v1/repos")))

    async def create_repo(self, name: str) -> RepoSummary:
        async with self._explained(name):
            response = await self._http.request("POST", "/v1/repos", json={"name": name})
            return repo_summary(json_object(response))

    async def delete_repo(self, name: str) -> None:
        async with self._explained(name):
            await self._http.request("DELETE", f"/v1/repos/{quote(name, safe='')}")

    @asynccontextmanager
    async def _explained(self, name: str | None = None) -> AsyncIterator[None]:
        """A RemoteError inside becomes an AdminError worded by `explain`."""
        try:
            yield
        except RemoteError as e:
            raise AdminError(self.explain(e, name)) from e

    def explain(self, e: RemoteError, name: str | None) -> str:
        """The one line a user reads for `e`, met while working on repo `name`."""
        base = self.base_url
        if isinstance(e, Unauthorized):
            return unauthorized_message(base, e, has_token=self._http.has_token)
        if isinstance(e, NotFound) and name is not None:
            return no_repo_message(base, name)
        if isinstance(e, Conflict) and e.code == "repo_exists":
            return f"repo {name!r} already exists on {base}"
        detail = e.message.removeprefix(f"{base}: ")  # "POST /v1/repos: 422 why"
        if isinstance(e, Unavailable):
            return f"cannot reach {base}: {detail}"
        if isinstance(e, ProtocolError) and e.status == 422:
            return f"{base} refused the repo name: {detail.partition(' 422 ')[2] or detail}"
        return f"{base}: {detail}"
