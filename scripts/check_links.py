#!/usr/bin/env python3
"""Every relative link in README.md and docs/*.md resolves: the file exists, and an anchor
names a heading of that file (GitHub's slugs). Exits 1 listing what does not. Run by .ci/run.

    python3 scripts/check_links.py [ROOT]
"""
import pathlib
import re
import sys

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(title):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"`|\*|_(?=\W)|(?<=\W)_", "", title.strip().lower())
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def outside_fences(text):
    fenced = False
    for number, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path):
    seen = {}
    found = set()
    for _, line in outside_fences(path.read_text()):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    cache = {}
    broken = []
    for page in pages:
        for number, line in outside_fences(page.read_text()):
            # Inline code is not a link.
            line = re.sub(r"`[^`]*`", "", line)
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(root)}:{number}: {target}"
                if not resolved.exists():
                    broken.append(f"{where} (no such file)")
                    continue
                if anchor and resolved.suffix == ".md":
                    if resolved not in cache:
                        cache[resolved] = anchors(resolved)
                    if anchor not in cache[resolved]:
                        broken.append(f"{where} (no heading with that anchor)")
    if broken:
        print("broken links:", *broken, sep="\n  ")
        return 1
    print(f"links: {len(pages)} pages checked, every relative link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
