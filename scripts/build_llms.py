"""Build ``docs/llms.txt`` and ``docs/llms-full.txt`` from ``docs/*.md``.

    python scripts/build_llms.py           # write both files
    python scripts/build_llms.py --check   # exit 1 when either is stale (the tests run this)

``llms.txt`` follows the llms.txt convention (https://llmstxt.org): an H1 title, a
blockquote summary, then sections of ``- [name](url): description`` links. The docs
come in the order of the Contents list of ``docs/index.md``, each described by its line
there; a page that list does not name follows, described by its first sentence.
``llms-full.txt`` is every page, whole, in the same order. Both are committed: rerun
this script after changing a page under ``docs/``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
TITLE = "conveyor"
#: Pages an agent can skip when its context is short (the convention's "Optional").
OPTIONAL = ("architecture.md", "benchmarks.md")
_LINK = re.compile(r"^- \[(?P<name>[^\]]+)\]\((?P<file>[\w.-]+\.md)\):\s*(?P<text>.*)$")


def _paragraphs(markdown: str) -> list[str]:
    """The text paragraphs of a page (no headings, lists, tables or code), each on one line."""
    out: list[str] = []
    current: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        plain = not fenced and line.strip() and not line.lstrip().startswith(("#", "-", "|", ">"))
        if plain:
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def _title(markdown: str, fallback: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def _first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.:])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(":.") + "."


def _contents(index: str) -> dict[str, tuple[str, str]]:
    """file -> (name, description) from the bullet list under ``## Contents``."""
    entries: dict[str, tuple[str, str]] = {}
    section = index.split("## Contents", 1)[-1].split("\n## ", 1)[0]
    last: str | None = None
    for line in section.splitlines():
        match = _LINK.match(line)
        if match:
            last = match["file"]
            entries[last] = (match["name"], match["text"].strip())
        elif last and line.startswith("  ") and line.strip():
            name, text = entries[last]
            entries[last] = (name, f"{text} {line.strip()}")
        else:
            last = None
    return entries


def _pages() -> list[tuple[str, str, str, str]]:
    """(file, name, description, text) of every page, in reading order."""
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = _contents(index)
    files = sorted(p.name for p in DOCS.glob("*.md"))
    order = ["index.md"] + [f for f in listed if f in files]
    order += [f for f in files if f not in order]
    pages = []
    for name in order:
        text = (DOCS / name).read_text(encoding="utf-8")
        if name == "index.md":
            title, description = "Overview", _first_sentence(_paragraphs(text)[0])
            description += " A first example, the contents, the public names and the errors."
        elif name in listed:
            title, description = listed[name]
        else:
            paragraphs = _paragraphs(text)
            title = _title(text, name)
            description = _first_sentence(paragraphs[0]) if paragraphs else ""
        pages.append((name, title, description.strip(), text))
    return pages


def build() -> dict[Path, str]:
    """The two files' contents, by path."""
    pages = _pages()
    summary = _paragraphs(pages[0][3])[0]
    head = f"# {TITLE}\n\n> {summary}\n"
    details = (
        "\nOne API on three stores (SQLite, PostgreSQL, Redis). The guide teaches the API "
        "feature by feature; semantics states the guarantees; the CLI page covers every "
        "`conveyor` command. llms-full.txt beside this file holds every page whole.\n"
    )

    def links(names: list[tuple[str, str, str, str]]) -> str:
        return "".join(
            f"- [{title}]({name})" + (f": {description}" if description else "") + "\n"
            for name, title, description, _ in names
        )

    main = [p for p in pages if p[0] not in OPTIONAL]
    optional = [p for p in pages if p[0] in OPTIONAL]
    llms = head + details + "\n## Docs\n\n" + links(main)
    if optional:
        llms += "\n## Optional\n\n" + links(optional)
    full = head + "".join(
        f"\n<!-- docs/{name} -->\n\n{text.strip()}\n" for name, _, _, text in pages
    )
    return {DOCS / "llms.txt": llms, DOCS / "llms-full.txt": full}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, content in build().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path.relative_to(DOCS.parent)}")
    if stale:
        print(
            f"docs/{' and docs/'.join(stale)} stale: run python scripts/build_llms.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
