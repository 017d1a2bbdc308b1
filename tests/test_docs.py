"""The documentation: a short README as the front door, docs/ pages for the details, and no dead links.

Checks that README.md stays short, that every relative Markdown link in README.md, CHANGELOG.md and
docs/*.md points at a file that exists, that the README and docs/ hold no project history (issue
numbers, "earlier session"), and that every `python -m <module> --help` shown in their shell blocks runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

README = PROJECT / "README.md"
CHANGELOG = PROJECT / "CHANGELOG.md"
DOCS = sorted((PROJECT / "docs").glob("*.md"))
LINKED = [README, CHANGELOG, *DOCS]  # files whose relative links must resolve
USER_DOCS = [README, *DOCS]  # files that describe the project as it is, without its history

# [text](target) and ![alt](target), also [text](target "title"); reference definitions [label]: target
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL_FENCE = re.compile(r"^(`{3,}|~{3,})[ \t]*(bash|sh|shell|console|zsh)[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S)
HELP_COMMAND = re.compile(r"(?:^|[\s;&|(])python3? -m ([A-Za-z_][\w.]*) --help\b")
NEEDS_SERVICE: set[str] = set()  # modules whose --help would need a running service (none today)


def without_code(text: str) -> str:
    """The Markdown text outside fenced code blocks and inline code spans: where links are links."""
    text = FENCE.sub("", text)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text, flags=re.S)


def relative_targets(path: Path) -> list[str]:
    text = without_code(path.read_text(encoding="utf-8"))
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith("#")]


def help_commands() -> list[tuple[str, str]]:
    commands = []
    for path in USER_DOCS:
        for block in SHELL_FENCE.finditer(path.read_text(encoding="utf-8")):
            for module in HELP_COMMAND.findall(block.group(3)):
                commands.append((path.relative_to(PROJECT).as_posix(), module))
    return sorted(set(commands))


def test_the_docs_exist():
    assert README.is_file() and CHANGELOG.is_file()
    assert DOCS, "docs/*.md: the pages the README links to"


def test_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details to a page in docs/"


def test_readme_keeps_the_test_command_ci_runs():
    """.ci/run runs `make test`, the README's test command: both must name the same one."""
    assert re.search(r"^make test\b", (PROJECT / ".ci" / "run").read_text(), re.MULTILINE)
    shell = "\n".join(block.group(3) for block in SHELL_FENCE.finditer(README.read_text(encoding="utf-8")))
    assert re.search(r"^make test\b", shell, re.MULTILINE)


@pytest.mark.parametrize("path", LINKED, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_resolves_to_a_file(path: Path):
    targets = relative_targets(path)
    missing = []
    for target in targets:
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not file_part:
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists():
            missing.append(target)
    assert not missing, f"{path.name}: links to files that do not exist: {missing}"


def test_the_link_checker_sees_links():
    """Guard against a checker that passes because it finds nothing."""
    assert "docs/pipeline.md" in relative_targets(README)
    assert "docs/mlflow_ui_runs.png" in relative_targets(README)
    assert relative_targets(PROJECT / "docs" / "pipeline.md")
    assert not relative_targets_in_text("`[a](nowhere.md)`\n```\n[b](nowhere.md)\n```\n[c](https://example.org)")


def relative_targets_in_text(text: str) -> list[str]:
    return [t for t in INLINE_LINK.findall(without_code(text)) if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_no_project_history_in_the_user_docs(path: Path):
    text = path.read_text(encoding="utf-8")
    issues = re.findall(r"\bissues?\s*#?\d+", text, re.IGNORECASE)
    assert not issues, f"{path.name} names issue numbers: {issues}; say what is true now instead"
    assert not re.search(r"earlier session", text, re.IGNORECASE), f"{path.name}: project history"


def test_help_commands_are_found():
    """The docs show at least one `python -m ... --help`; each one is run below."""
    assert help_commands()


@pytest.mark.parametrize("where,module", help_commands())
def test_every_help_command_in_the_docs_runs(where: str, module: str):
    if module in NEEDS_SERVICE:
        pytest.skip(f"{module} --help needs a running service")
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{where}: python -m {module} --help exited {result.returncode}:\n{result.stderr}"
    assert "usage" in result.stdout.lower()
