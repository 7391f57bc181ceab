"""README and docs/ name only what exists: the commands' scripts, modules and configs, and the
pages and sections they link to. Entry points move between modules; a page that still names the
old place sends every reader to an error, and no other test would notice."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _rel(p):
    return str(p.relative_to(ROOT))


def _code_lines(text):
    """Lines of the ```bash / ```sh / ``` blocks that are commands (not output or Python)."""
    lines, lang = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            lang = None if lang is not None else (line[3:].strip() or "text")
            continue
        if lang in ("bash", "sh", "shell", "console"):
            lines.append(line.split("  #", 1)[0].strip())
    return lines


def _slug(title):
    """GitHub's anchor for a heading."""
    s = re.sub(r"[`*_]", "", title.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _module_file(name):
    base = ROOT.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__main__.py") if p.is_file()), None)


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    commands = [x for x in _code_lines((ROOT / "README.md").read_text()) if x]
    assert commands[:2] == ["bash run_with_gpu/run_quick_start.sh", "bash scripts/run_tests.sh"]
    ci = [x.strip() for x in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "bash scripts/run_tests.sh" in ci


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_commands_name_modules_scripts_and_configs_that_exist(page):
    text = page.read_text()
    missing = [f"module {mod}" for mod in re.findall(r"python3? -m ((?:ebv_ms|benchmarks)(?:\.\w+)+)", text)
               if _module_file(mod) is None]
    for line in _code_lines(text):
        for path in re.findall(r"(?:^|\s)((?:[\w.-]+/)*[\w.-]+\.(?:py|sh|yaml))\b", line):
            if "{" in path or path.startswith(("/", "runs/", "tmp")):
                continue
            if not (ROOT / path).exists():
                missing.append(f"file {path}: {line}")
    assert not missing, f"{_rel(page)} names what does not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_to_pages_and_sections_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
            if anchor not in heads:
                broken.append(target)
    assert not broken, f"{_rel(page)}: broken links {broken}"
