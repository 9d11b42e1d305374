"""The README and docs/ (issue 19): the README starts with the two commands and shows the
screenshots, and no relative link in it or in docs/ points at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_starts_with_the_two_commands_then_shows_the_pictures_and_logins():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert text.split("```sh", 1)[0].strip() == "# ReadRoom"  # nothing before them but the title
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
    for picture in ("worklist", "reading", "operations", "qa"):
        assert f"](docs/screenshots/{picture}.png)" in text
        assert (ROOT / "docs" / "screenshots" / f"{picture}.png").is_file()
    from radiology.demo import PEOPLE

    for person in PEOPLE:  # every demo login is in the README's table
        assert f"`{person.username}`" in text, person.username
    assert "](docs/README.md)" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (page.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert missing == [], missing


def test_every_docs_page_is_in_the_index():
    index = (ROOT / "docs" / "README.md").read_text()
    unlisted = [p.name for p in PAGES[1:] if p.name != "README.md" and f"]({p.name})" not in index]
    assert unlisted == [], unlisted
