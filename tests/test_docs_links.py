"""Every relative link in the README and the guides under docs/ points at a file that exists, and
every `#anchor` at a heading of that file (GitHub's heading slugs)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    body = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", body, re.M)}


def relative_links(path):
    body = FENCE.sub("", path.read_text(encoding="utf-8"))
    for match in LINK.finditer(body):
        target = match.group(1) or match.group(2)
        if not re.match(r"^[a-z]+:", target):
            yield target


def test_slug_follows_github():
    assert slug("Memory levers") == "memory-levers"
    assert slug("Using the trained model: generate, evaluate") == "using-the-trained-model-generate-evaluate"
    assert slug("`--step`, resuming and faults") == "--step-resuming-and-faults"


def test_the_guides_exist_and_the_readme_links_each():
    readme_targets = set(relative_links(ROOT / "README.md"))
    for guide in DOCS[1:]:
        assert f"docs/{guide.name}" in {t.split("#")[0] for t in readme_targets}, guide.name


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)
