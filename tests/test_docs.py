"""The documentation's relative links lead somewhere, and the README stays short.

Pure Python, no server: every relative link in README.md, docs/*.md and bench/*.md
must name a file that exists and, with a `#anchor` into a Markdown file, a heading
of that file, slugged as GitHub slugs them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "bench").glob("*.md")),
]
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: links and headings live there."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, everything but letters,
    digits, spaces, hyphens and underscores dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of `page`, one line per broken link."""
    problems = []
    for number, line in prose_lines(page.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            goal = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(root)}:{number}: ({target})"
            if not goal.exists():
                problems.append(f"{where} {file_part} does not exist")
            elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
                problems.append(f"{where} no heading of {goal.name} has the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    assert not broken_links(page), "\n".join(broken_links(page))


def test_the_pages_are_found():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "bench/RESULTS.md", "bench/README.md", "docs/api.md"} <= names


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## Scale out on Ray\n\n## Notes\n## Notes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page: its own heading\n\n"
        "[fine](other.md#scale-out-on-ray) [fine](other.md#notes-1) [fine](#page-its-own-heading)\n"
        "[web](https://example.com/x#y) `[in code](missing.md)`\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[gone](missing.md) [no anchor](other.md#scale-out) [self](#nowhere)\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert "missing.md does not exist" in problems[0]
    assert "#scale-out" in problems[1] and "#nowhere" in problems[2]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Live stream (websockets)", "live-stream-websockets"),
        ("What BN does, measured", "what-bn-does-measured"),
        ("`speed`", "speed"),
        ("Preset sizing (server/experiment.py)", "preset-sizing-serverexperimentpy"),
        ("2026-11-26/27: BN test accuracy ≥ 0.990", "2026-11-2627-bn-test-accuracy--0990"),
    ],
)
def test_anchors_are_slugged_as_github_slugs_them(heading: str, anchor: str):
    assert slug(heading) == anchor


def test_the_readme_fits_on_a_few_screens_and_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < README_MAX_LINES
    assert "make run" in readme and "make test" in readme
