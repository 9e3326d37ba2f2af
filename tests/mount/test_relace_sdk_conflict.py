"""Issue 5: a change made through the official Relace SDK while the same file is being
edited in a relace: mount ends with both contents kept."""

from __future__ import annotations

import errno
import os
import re

import pytest
import relace

from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("relace")


def test_sdk_change_during_an_edit_keeps_both(server: ServerProc, mount_factory) -> None:
    with relace.Relace(api_key=server.token, base_url=f"{server.url}/relace/v1") as sdk:
        repo_id = sdk.repo.create(
            source={"type": "files", "files": [{"filename": "notes.md", "content": "v1\n"}]}
        ).repo_id
        m: MountProc = mount_factory(repo_id, create=False)
        assert (m.path / "notes.md").read_text() == "v1\n"
        fd = os.open(m.path / "notes.md", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"edited in the mount\n")
            sdk.repo.update(
                repo_id,
                source={
                    "type": "diff",
                    "operations": [
                        {"type": "write", "filename": "notes.md", "content": "edited via SDK\n"}
                    ],
                },
            )
            with pytest.raises(OSError) as e:
                os.fsync(fd)
            assert e.value.errno == errno.ESTALE
        finally:
            os.close(fd)
        files = {f.filename: f.content for f in sdk.repo.clone(repo_id).files}
    assert files.pop("notes.md") == "edited via SDK\n"
    [(name, content)] = files.items()
    assert re.fullmatch(r"notes\.conflict-\d{8}T\d{6}Z-.+\.md", name)
    assert content == "edited in the mount\n"
