"""Reading a service's answers: its JSON object, and its parsers' failures as one
error type (a missing or mistyped field is a ProtocolError naming the service)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import httpx

from repomount.remotes.errors import ProtocolError
from repomount.remotes.limits import decode_json

T = TypeVar("T")
P = ParamSpec("P")


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or a ProtocolError saying which request broke it
    (not JSON, or nested deeper than limits.MAX_JSON_DEPTH)."""
    try:
        data = decode_json(response.content)
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: not JSON ({exc})",
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{response.request.url.path}: expected a JSON object")
    return data


def parse_answer(build: Callable[[], T], service: str) -> T:
    """Run a parser of a service's JSON; a missing or mistyped field is a ProtocolError."""
    try:
        return build()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"unexpected answer from {service}: {exc!r}") from exc


def parses(service: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a parser of `service`'s answers (a wire module's function) so that a
    missing or mistyped field raises ProtocolError, as `parse_answer` does."""

    def decorate(parse: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(parse)
        def parsed(*args: P.args, **kwargs: P.kwargs) -> T:
            return parse_answer(functools.partial(parse, *args, **kwargs), service)

        return parsed

    return decorate
