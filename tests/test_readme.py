"""The README a user reads on GitHub, standing alone: every relative link in README.md and docs/*.md
resolves to a file in the repository (a link to the team's ../shared notes is a dead link for anyone who
clones the pack), and every markdown table has its header and separator rows, so GitHub renders it as a
table instead of rows of pipes."""

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: code may hold pipes and brackets that are no markdown."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def anchors(doc: Path) -> set[str]:
    """GitHub's ids for a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for _, line in prose(doc.read_text()) if line.startswith("#")}


def dead_links(text: str, doc: Path) -> list[str]:
    """Links in `text` (the text of `doc`) to a file outside the repository, a missing file or heading."""
    dead = []
    for number, line in prose(text):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # a web address
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.is_relative_to(REPO) or not path.exists() or \
                    (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                dead.append(f"{doc.name}:{number}: {target}")
    return dead


def table_faults(text: str) -> list[str]:
    """Each block of consecutive lines starting with `|` is one table: its 2nd line must be the separator
    (`|---|…|`) under a header row; a block of one line is a row cut off from its table."""
    faults, block = [], []
    for number, line in [*prose(text), (0, "")]:
        if line.startswith("|"):
            block.append((number, line))
            continue
        if block:
            first = block[0][0]
            if len(block) < 2 or not SEPARATOR.match(block[1][1].strip()):
                faults.append(f"line {first}: table without a header and |---| separator: {block[0][1][:80]}")
            elif block[0][1].count("|") != block[1][1].count("|"):
                faults.append(f"line {first}: header and separator have different column counts")
        block = []
    return faults


def test_the_readme_links_the_design_notes_in_the_repository():
    assert "docs/DESIGN.md" in (REPO / "README.md").read_text()
    assert (REPO / "docs" / "DESIGN.md").exists() and (REPO / "docs" / "CONTRIBUTING.md").exists()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves_inside_the_repository(doc):
    assert dead_links(doc.read_text(), doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_table_has_its_header_and_separator(doc):
    assert table_faults(doc.read_text()) == []


def test_the_checks_see_a_dead_link_and_a_row_cut_off_from_its_table():
    """Control: the faults this file guards against are found (a check that cannot fail guards nothing)."""
    text = ("See [notes](../shared/DESIGN.md), [layout](DESIGN.md#layout), [gone](DESIGN.md#no-such-heading),\n"
            "[missing](NOTES.md) and [contributing](CONTRIBUTING.md#what-a-change-comes-with).\n")
    dead = dead_links(text, REPO / "docs" / "probe.md")
    assert [d.split(": ", 1)[1] for d in dead] == ["../shared/DESIGN.md", "DESIGN.md#no-such-heading", "NOTES.md"]
    split = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    assert table_faults(split) == ["line 5: table without a header and |---| separator: | 3 | 4 |"]
    assert table_faults("| a | b |\n|---|---|\n| 1 | 2 |\n") == []
