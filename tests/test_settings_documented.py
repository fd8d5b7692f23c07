"""Every environment variable the settings read is named in README's Settings section: a knob a user cannot find is
a knob they cannot turn."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

READERS = {"env_bool", "env_list"}  # intentsite/settings/base.py's helpers; besides them, os.environ.get


def _variables_read(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        function = node.func
        reads_environ = (isinstance(function, ast.Attribute) and function.attr == "get"
                         and ast.unparse(function.value) == "os.environ")
        if reads_environ or (isinstance(function, ast.Name) and function.id in READERS):
            names.add(node.args[0].value)
    return names


def _settings_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Settings (environment variables)")
    return readme[start:readme.index("\n## ", start + 1)]


def test_the_reader_finds_each_way_a_setting_is_read():
    source = ('import os\nA = os.environ.get("ALPHA", "1")\nB = env_bool("BRAVO", False)\nC = env_list("CHARLIE", "")\n'
              'os.environ.setdefault("DELTA", "x")\nD = other.get("ECHO")\n')
    assert _variables_read(source) == {"ALPHA", "BRAVO", "CHARLIE"}  # setdefault sets, it does not read


def test_every_variable_the_settings_read_is_documented():
    read = set()
    for module in sorted((REPO / "intentsite" / "settings").glob("*.py")):
        read |= _variables_read(module.read_text())
    assert len(read) > 90  # the settings package was read, not an empty folder
    section = _settings_section()
    undocumented = sorted(name for name in read if not re.search(rf"\b{name}\b", section))
    assert not undocumented, f"read by intentsite/settings/ but not in README's Settings: {undocumented}"
