"""Issue 16 #8: the docs link only inside the repository.

Every relative link of README.md and docs/*.md names a file of the repository (and a
heading of it, when it has an anchor); nothing in the repository's text points at the
workspace around it (`../shared/...`, `/work/...`), which a clone does not have.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./shared/|\bshared/(design|reference|bench)\b|/work/")


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of `doc`."""
    found = set()
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s):, mailto: — not a file of ours
        name, _, anchor = target.partition("#")
        dest = (doc.parent / name).resolve() if name else doc
        assert dest.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert dest.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(dest), f"{doc.name}: no heading #{anchor} in {dest.name}"


def test_nothing_points_outside_the_repository() -> None:
    texts = [*DOCS, *(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*")]
    texts += [*(ROOT / "tests").rglob("*.py")]
    bad = []
    for path in texts:
        if not path.is_file() or path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert bad == []
