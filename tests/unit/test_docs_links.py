"""Every relative link and image in the project's Markdown files points at a file that exists (and
that git does not ignore, where git can say), and every ``#anchor`` names a heading of its target, by GitHub's
rules: so moving a section from one document to another cannot leave a dead link behind."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
# folders that are no part of the documentation when git cannot list the tracked files
_SKIPPED_DIRS = {".git", "node_modules", "data", "demo-data", ".venv", "venv", "__pycache__"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target): the target up to a space or the closing parenthesis,
# one level of parentheses allowed inside it
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?((?:[^()\s<>]|\([^()\s]*\))*)>?(?:\s+[\"'(][^)]*)?\s*\)"
)
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML_TARGET = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


@dataclass(frozen=True)
class Link:
    source: Path  # the Markdown file, relative to the repository
    line: int
    target: str  # as written

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.target}"


@cache
def tracked_files() -> frozenset[str] | None:
    """The repository's files, tracked or new but not ignored (relative paths), or None where git
    cannot tell: what a clone will hold once the work is committed."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 or not result.stdout:
        return None
    return frozenset(name for name in result.stdout.decode().split("\0") if name)


def markdown_files() -> list[Path]:
    tracked = tracked_files()
    if tracked is not None:
        names = sorted(name for name in tracked if name.lower().endswith(".md") and (REPO / name).is_file())
        return [Path(name) for name in names]
    return sorted(
        path.relative_to(REPO)
        for path in REPO.rglob("*.md")
        if not _SKIPPED_DIRS.intersection(path.relative_to(REPO).parts[:-1])
    )


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, code spans blanked out."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            continue
        lines.append((number, _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lower-case, spaces to '-', every
    character but letters, digits, '_', '-' and spaces dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's or image's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors_of(path: Path) -> frozenset[str]:
    """Every anchor a Markdown file offers: its headings' (a repeated one gets -1, -2, ... as on
    GitHub) and explicit <a name=...> / id=... anchors."""
    text = (REPO / path).read_text(encoding="utf-8")
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _heading_lines(text):
        base = github_anchor(line)
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    anchors.update(_HTML_ANCHOR.findall(text))
    return frozenset(anchors)


def _heading_lines(text: str) -> list[tuple[int, str]]:
    """ATX headings outside code blocks; their code spans kept (they count in the anchor)."""
    raw = text.splitlines()
    headings = []
    for number, _ in prose_lines(text):
        match = _HEADING.match(raw[number - 1])
        if match:
            headings.append((number, match.group(2)))
    return headings


def links_of(path: Path) -> list[Link]:
    text = (REPO / path).read_text(encoding="utf-8")
    links: list[Link] = []
    for number, line in prose_lines(text):
        targets = [m.group(1) for m in _INLINE_LINK.finditer(line)]
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        targets += _HTML_TARGET.findall(line)
        links += [Link(path, number, target) for target in targets if target]
    return links


def problem_with(link: Link) -> str | None:
    """Why this link is broken, or None when it works (external links are not checked)."""
    target = link.target.strip()
    if _EXTERNAL.match(target):
        return None
    file_part, _, anchor = target.partition("#")
    file_part = unquote(file_part.split("?", 1)[0])
    if file_part:
        base = REPO if file_part.startswith("/") else (REPO / link.source).parent
        resolved = (base / file_part.lstrip("/")).resolve()
        try:
            relative = resolved.relative_to(REPO)
        except ValueError:
            return "points outside the repository"
        if not resolved.exists():
            return f"{relative} does not exist"
        tracked = tracked_files()
        if tracked is not None and resolved.is_file() and relative.as_posix() not in tracked:
            return f"{relative} is ignored by git: a clone will not have it"
    else:
        relative = link.source
    if anchor and relative.suffix.lower() == ".md":
        if unquote(anchor) not in anchors_of(relative):
            return f"{relative} has no heading with the anchor #{anchor}"
    return None


def test_github_anchor_rules():
    assert github_anchor("Which ranking, measured") == "which-ranking-measured"
    assert github_anchor("Cold start (`cold_start.py`)") == "cold-start-cold_startpy"
    assert github_anchor("Measured: what a round costs") == "measured-what-a-round-costs"
    assert github_anchor("Where does a change go?") == "where-does-a-change-go"
    assert github_anchor("Round cost (`benchmarks/round_cost.py`)") == "round-cost-benchmarksround_costpy"
    assert github_anchor("More workers, more GPUs") == "more-workers-more-gpus"


def test_the_check_finds_broken_links(tmp_path, monkeypatch):
    # the check itself must be able to fail: a missing file, a missing anchor in another file and
    # in the same file are each reported, while good links, code and external links are not
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    monkeypatch.setattr(f"{__name__}.tracked_files", lambda: None)
    anchors_of.cache_clear()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Which ranking, measured\n\n## Setup\n\n## Setup\n"
    )
    (tmp_path / "shot.png").write_bytes(b"png")
    (tmp_path / "README.md").write_text(
        "# Title\n\n## How it works\n\n"
        "[good](docs/guide.md#which-ranking-measured) [second setup](docs/guide.md#setup-1) "
        "![shot](shot.png) [here](#how-it-works) [web](https://example.org/x#y)\n"
        "`[in code](missing-in-code.md)`\n```\n[in a block](missing-in-block.md)\n```\n"
        "[gone](docs/missing.md) ![gone too](docs/missing.png)\n"
        "[bad anchor](docs/guide.md#which-ranking) [bad local](#how-it-work)\n"
        '<img src="docs/nothing.png">\n\n[ref]: docs/none.md\n'
    )
    try:
        problems = {link.target: problem_with(link) for link in links_of(Path("README.md"))}
    finally:
        anchors_of.cache_clear()
    assert {target for target, problem in problems.items() if problem is None} == {
        "docs/guide.md#which-ranking-measured",
        "docs/guide.md#setup-1",
        "shot.png",
        "#how-it-works",
        "https://example.org/x#y",
    }
    assert {target for target, problem in problems.items() if problem} == {
        "docs/missing.md",
        "docs/missing.png",
        "docs/guide.md#which-ranking",
        "#how-it-work",
        "docs/nothing.png",
        "docs/none.md",
    }
    assert "in code" not in str(problems) and "missing-in-block.md" not in problems


def test_the_documentation_is_found():
    names = {path.as_posix() for path in markdown_files()}
    assert {"README.md", "docs/architecture.md", "benchmarks/README.md", "model/README.md"} <= names
    assert sum(len(links_of(path)) for path in markdown_files()) > 20, "the link pattern is stale"


@pytest.mark.parametrize("path", markdown_files(), ids=str)
def test_relative_links_and_anchors_resolve(path):
    broken = [f"{link} ({problem})" for link in links_of(path) if (problem := problem_with(link))]
    assert not broken, "broken links:\n" + "\n".join(broken)
