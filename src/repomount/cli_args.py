"""Pieces every command's parser shares: value types and the environment help."""

from __future__ import annotations

import argparse

from repomount.options import parse_delay, parse_size

# The environment variables each command reads (tests/mount/test_cli.py checks these
# names against the code that reads them; importing that code here would load httpx).
ENV_TOKEN = "  REPOMOUNT_TOKEN          bearer token for repomount's server (http://, https://)\n"
ENV_SERVICES = """\
  RELACE_API_KEY           API key for relace: remotes
  RELACE_API_URL           Relace API base URL (default https://api.relace.run/v1;
                           --endpoint wins)
  TERMINALUSE_API_KEY      API key for terminaluse: remotes
  TERMINALUSE_API_URL      Terminal Use API base URL (default https://api.terminaluse.com;
                           --endpoint wins)
  OXEN_API_KEY             API key for oxen: remotes (else ~/.config/oxen/auth_config.toml)
  OXEN_API_URL, OXEN_HOST  Oxen server (default https://hub.oxen.ai; --endpoint wins)
  OXEN_AUTHOR_NAME,        who oxen: commits are signed by (else Oxen's user_config.toml,
  OXEN_AUTHOR_EMAIL        else "repomount HOSTNAME")
  SENTRY_AUTH_TOKEN        auth token for sentry: remotes
  SENTRY_URL               Sentry server URL (default https://sentry.io; --endpoint wins)
"""
ENV_DIRS = """\
  XDG_CACHE_HOME           the default --cache-dir is $XDG_CACHE_HOME/repomount
                           (default ~/.cache/repomount)
  XDG_STATE_HOME           the default --state-dir is $XDG_STATE_HOME/repomount
                           (default ~/.local/state/repomount)
"""
ENV_CONTROL = """\
  XDG_RUNTIME_DIR          control sockets go in $XDG_RUNTIME_DIR/repomount
                           (default $TMPDIR/repomount-UID, /tmp without TMPDIR)
"""
ENV_DEBUG = """\
  REPOMOUNT_LOG_STALLS_MS  log every step that holds the mount's event loop longer
                           than this many milliseconds (debugging)
"""


def environment(*parts: str) -> str:
    return "environment:\n" + "".join(parts)


def size(text: str) -> int:
    """A positive size, as the mount options take them (options.parse_size: `inf` and
    `1e400` were tracebacks here)."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seconds(text: str) -> float:
    """A wait of `sync`, `unmount` and `demo`: 0 or more seconds, as a mount's
    --drain-timeout (a NaN or a huge one was a traceback, a negative one a wait of 0)."""
    try:
        return parse_delay(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
