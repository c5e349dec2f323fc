"""The README and docs/ as a reader follows them: the README stays short, every page says first when
you need it, every relative link (and #anchor) lands, and every script a command block runs exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import PROJECT_DIR

PAGES = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def prose(page: Path) -> str:
    return FENCED.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as '-', repeats numbered."""
    ids, count = set(), {}
    for title in re.findall(r"^#{1,6} (.+)$", prose(page), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        ids.add(f"{slug}-{count[slug]}" if slug in count else slug)
        count[slug] = count.get(slug, 0) + 1
    return ids


def test_the_readme_stays_short() -> None:
    assert len((PROJECT_DIR / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_every_docs_page_opens_with_when_you_need_it(page: Path) -> None:
    first = page.read_text().split("\n\n")[1]
    assert first.startswith("Read this when you"), first


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_lands(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        landed = (page.parent / path).resolve() if path else page
        lands = landed.exists() and landed.is_relative_to(PROJECT_DIR)
        if not lands or anchor and (landed.suffix != ".md" or anchor not in anchors(landed)):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_script_a_command_block_runs_exists(page: Path) -> None:
    missing = []
    for block in FENCED.findall(page.read_text()):
        for module, script in re.findall(r"python3? (?:-m ([\w.]+)|(\S+\.py))", block):
            if script and not (PROJECT_DIR / script).is_file():
                missing.append(script)
            if module and module not in {"pytest", "venv", "pip"} and not any(
                    (PROJECT_DIR / module.replace(".", "/")).with_suffix(suffix).exists() for suffix in (".py", "")):
                missing.append(module)
    assert not missing, f"{page.name}: {missing}"
