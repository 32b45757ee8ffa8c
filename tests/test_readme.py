"""The README's two quick-start commands are the ones CI runs, so they stay true."""

from __future__ import annotations

import re

from tests.conftest import REPO


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "nightear detect" in commands[0] and "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci


def test_the_test_command_installs_every_system_package_a_test_asks_for() -> None:
    """A test that skips for want of a system package names it (`apt-get install -y ...`); the
    README's test command must install it, so a new user's run skips only for the shared data."""
    test_command = quick_start_commands()[1]
    installed = set(test_command.split("apt-get install -y", 1)[1].split("&&", 1)[0].split())
    wanted: set[str] = set()
    for source in [*(REPO / "tests").glob("*.py"), REPO / "conftest.py"]:
        for match in re.finditer(r"apt-get install -y ([a-z0-9. +-]+)\)", source.read_text()):
            wanted.update(match.group(1).split())
    assert {"mosquitto", "openssl", "systemd", "python3-seccomp"} <= wanted
    assert wanted <= installed, f"README command 2 does not install {sorted(wanted - installed)}"


def test_every_docs_page_is_linked_from_the_readme_and_every_relative_link_resolves() -> None:
    readme = (REPO / "README.md").read_text()
    pages = sorted((REPO / "docs").glob("*.md"))
    assert len(pages) >= 8
    for page in pages:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    for source in [REPO / "README.md", *pages, *(REPO / "models").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", source.read_text()):
            assert (source.parent / target).exists(), f"{source.name} links {target}, which is missing"
