"""The user documentation: README.md stays a short manual, README.md and docs/*.md carry no
history (git keeps it), and every relative link in them points at a file that exists.

Generated tables are tested elsewhere; this file reads the prose and the links only.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
MAX_README_LINES = 300

# The shared hook's pattern, and the words that date a page.
HISTORY = re.compile(r"session|issue [0-9]+|new defaults?|\bnew default|\bearlier\b|\bthis (run|session)\b",
                     re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def history_hits(text: str) -> list[str]:
    """Each line of text with a history word, as 'line N: ...'."""
    return [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
            if HISTORY.search(line)]


def relative_links(text: str) -> list[str]:
    """The link targets of markdown text outside code, less external links and pure anchors,
    each without its #anchor."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = (m.group(1) for m in LINK.finditer(prose))
    return [t.split("#", 1)[0] for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def broken_links(md: Path) -> list[str]:
    """The relative links of md that resolve to no existing path."""
    return [t for t in relative_links(md.read_text(encoding="utf-8")) if not (md.parent / t).exists()]


def _name(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines, at most {MAX_README_LINES}: move detail to docs/"


def test_docs_exist():
    assert README in DOCS and len(DOCS) > 1, "README.md and docs/*.md expected"


@pytest.mark.parametrize("md", DOCS, ids=_name)
def test_no_history_words(md):
    hits = history_hits(md.read_text(encoding="utf-8"))
    assert not hits, f"{_name(md)}: history belongs in git, not the docs:\n" + "\n".join(hits)


@pytest.mark.parametrize("md", DOCS, ids=_name)
def test_relative_links_resolve(md):
    bad = broken_links(md)
    assert not bad, f"{_name(md)}: links to missing paths: {bad}"


def test_history_pattern_catches_dated_words():
    text = ("A manual line.\nThe New Default since Issue 14.\nas measured earlier\n"
            "in this run\nnew defaults\nSessions of work\nearliest is fine\n")
    assert history_hits(text) == ["line 2: The New Default since Issue 14.", "line 3: as measured earlier",
                                  "line 4: in this run", "line 5: new defaults", "line 6: Sessions of work"]


def test_link_extraction_skips_code_external_and_anchors():
    text = ("See [params](docs/params.md#train) and ![plot](img/a.png \"title\").\n"
            "[site](https://dvc.org) [top](#quick-start) [mail](mailto:a@b.c) `[x](not/a/link.md)`\n"
            "```\n[y](in/fence.md)\n```\n<angle>[z](<docs/z.md>)\n")
    assert relative_links(text) == ["docs/params.md", "img/a.png", "docs/z.md"]


def test_broken_link_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("x", encoding="utf-8")
    md = tmp_path / "README.md"
    md.write_text("[ok](docs/here.md) [dir](docs/) [gone](docs/gone.md#a) [up](../nowhere.md)\n",
                  encoding="utf-8")
    assert broken_links(md) == ["docs/gone.md", "../nowhere.md"]
