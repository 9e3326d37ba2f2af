"""Every hosted service's base URL is checked the same way (remotes/endpoint.py)."""

from __future__ import annotations

import pytest

from repomount.remotes.endpoint import checked_url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://h", "expected http(s)://HOST[:PORT][/PATH]"),
        ("https://", "expected http(s)://HOST[:PORT][/PATH]"),
        ("https://user:s3cret@h", "put the key in SVC_KEY, not in the URL"),
        ("https://h/?a=1", "no query or fragment allowed"),
        ("https://h/#top", "no query or fragment allowed"),
        ("https://h:99999", "the port is not a number from 0 to 65535"),
    ],
)
def test_a_bad_url_is_one_line_that_never_repeats_a_secret(url: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        checked_url(url, what="Svc URL", secret_env="SVC_KEY")
    message = str(caught.value)
    assert message.startswith("bad Svc URL ") and message.endswith(why)
    assert "s3cret" not in message and "\n" not in message


def test_a_path_is_allowed_unless_the_api_is_on_the_root() -> None:
    assert checked_url(" https://h:8443/api/ ", what="x", secret_env="K").path == "/api/"
    with pytest.raises(ValueError, match="on the root"):
        checked_url("https://h/api", what="x", secret_env="K", root_only="on the root")
