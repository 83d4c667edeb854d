"""``funboost new-broker NAME``: a new broker plugin distribution, made from the plugin template.

The template is ``plugins/_template`` of the funboost repository (kind ``template_dir``, a queue of JSON
files in a directory, certified by the contract suite). It ships inside funboost-core as package data
(``funboost/_plugin_template``), so the command works from a plain ``pip install funboost-core``. The copy
is renamed throughout (distribution, import package, kind, classes, environment variable) and leaves out
build output (``build/``, ``dist/``, ``*.egg-info``, ``__pycache__``).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TEMPLATE_DIR = Path(__file__).resolve().parent / "_plugin_template"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_SKIP_DIRS = {"build", "dist", "__pycache__", ".pytest_cache", ".tox", ".venv"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
_TEXT_SUFFIXES = {".py", ".toml", ".md", ".txt", ".cfg", ".ini"}


class ScaffoldError(ValueError):
    """The plugin cannot be created (bad name, destination exists, template missing)."""


@dataclass(frozen=True)
class PluginNames:
    """Every name of a new plugin, derived from the broker name (``my-broker``)."""

    kind: str  # my_broker: the broker_kind users pass
    distribution: str  # funboost-my-broker
    package: str  # funboost_my_broker
    class_prefix: str  # MyBroker
    env_prefix: str  # FUNBOOST_MY_BROKER

    @classmethod
    def from_name(cls, name: str) -> "PluginNames":
        raw = name.strip().lower()
        for prefix in ("funboost-", "funboost_"):
            if raw.startswith(prefix):
                raw = raw[len(prefix):]
        if not _NAME.match(raw):
            raise ScaffoldError(f"invalid broker name {name!r}: use lowercase letters, digits, '-' or '_', "
                                f"starting with a letter (e.g. 'mybroker' or 'my-broker')")
        snake = raw.replace("-", "_")
        camel = "".join(part.capitalize() for part in snake.split("_"))
        return cls(kind=snake, distribution=f"funboost-{snake.replace('_', '-')}", package=f"funboost_{snake}",
                   class_prefix=camel, env_prefix=f"FUNBOOST_{snake.upper()}")

    def replacements(self) -> list[tuple[str, str]]:
        # longest first, so that e.g. "funboost_template" is renamed before "template_dir" could match
        return [
            ("FUNBOOST_TEMPLATE_DIR", f"{self.env_prefix}_DIR"),
            ("funboost-template", self.distribution),
            ("funboost_template", self.package),
            ("DirectoryBroker", f"{self.class_prefix}Broker"),
            ("DirectoryOptions", f"{self.class_prefix}Options"),
            ("template_dir", self.kind),
            ("dir_queue", f"{self.kind}_queue"),
        ]


def _skipped(path: Path) -> bool:
    return any(part in _SKIP_DIRS or part.endswith(_SKIP_SUFFIXES) for part in path.parts)


def new_broker_plugin(name: str, dest: Optional[Path] = None, template: Path = TEMPLATE_DIR) -> Path:
    """Create the distribution of broker ``name`` in ``dest`` (default ``./funboost-<name>``); return it."""
    names = PluginNames.from_name(name)
    target = Path(dest) if dest is not None else Path.cwd() / names.distribution
    if target.exists() and any(target.iterdir()):
        raise ScaffoldError(f"{target} already exists and is not empty")
    if not (template / "pyproject.toml").is_file():
        raise ScaffoldError(f"the plugin template is missing from this installation ({template})")
    pairs = names.replacements()
    written = 0
    for src in sorted(template.rglob("*")):
        rel = src.relative_to(template)
        if src.is_dir() or _skipped(rel):
            continue
        rel_text = str(rel)
        for old, new in pairs:
            rel_text = rel_text.replace(old, new)
        out = target / rel_text
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in _TEXT_SUFFIXES:
            text = src.read_text(encoding="utf-8")
            for old, new in pairs:
                text = text.replace(old, new)
            out.write_text(text, encoding="utf-8")
        else:
            shutil.copyfile(src, out)
        written += 1
    if not written:
        raise ScaffoldError(f"the plugin template at {template} has no files")
    return target
