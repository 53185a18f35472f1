"""The configuration reference, written from the settings schema: ``python -m aebnas.cli.config_reference``.

Every config group and key with its type, default, allowed values and meaning comes from the
settings classes (``aebnas.config_checks.setting``), so the page cannot drift from the code;
a test compares the committed ``docs/reference/configuration.md`` with this output.
``--check`` exits 1 when the committed file is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, NamedTuple

from aebnas.cli.common import group_options
from aebnas.cli.config_schema import ENTRY_POINTS, GROUP_SCHEMAS, PRIMARY_SCHEMAS, SECTION_SCHEMAS
from aebnas.config_checks import Settings, allowed_text, type_name
from aebnas.runtime.stream import BudgetSettings, StreamSettings
from aebnas.space.config import BranchChoices, SpaceSettings

#: The committed page, relative to the repository root.
REFERENCE = Path("docs") / "reference" / "configuration.md"


class Section(NamedTuple):
    title: str      # how keys are written on the command line, e.g. trainer.<key>
    schema: type[Settings]
    where: str      # which entry point reads it and from where


def sections() -> list[Section]:
    """Every schema in the order a user meets them: the search's groups, then the other entry points."""
    out = [Section("aebnas-search", PRIMARY_SCHEMAS["config"],
                   "aebnas-search: top level of conf/config.yaml (over `config_base`), e.g. `seed=3 workers=2`"),
           Section("space", SpaceSettings, "aebnas-search, aebnas-profile: group `space` (conf/space/)"),
           Section("space.branch", BranchChoices, "aebnas-search: `space.branch` inside a space preset")]
    for group, schema in GROUP_SCHEMAS.items():
        out.append(Section(group, schema, f"group `{group}` (conf/{group}/, presets over `{group}/base`)"))
    for config, schema in PRIMARY_SCHEMAS.items():
        if config == "config":
            continue  # aebnas-search's own, listed first
        out.append(Section(ENTRY_POINTS[config], schema, f"top level of conf/{config}.yaml (over `{config}_base`)"))
        if schema is StreamSettings:
            out.append(Section("budget", BudgetSettings, "aebnas-stream: `budget.<key>` (the budget controller)"))
    for (config, section), schema in SECTION_SCHEMAS.items():
        out.append(Section(section, schema, f"aebnas-{config}: `{section}` in conf/{config}.yaml"))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "required"
    value = f.default.defaults() if isinstance(f.default, Settings) else f.default
    return f"`{_yaml(value)}`" if not isinstance(f.default, Settings) else "see below"


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if value == "":
        return "''"
    return str(value)


def render_section(section: Section) -> list[str]:
    """One heading, where it is read, its presets, and a table of its keys."""
    schema = section.schema
    doc = (schema.__doc__ or "").strip().split("\n\n")[0].replace("``", "`").replace("\n", " ")
    doc = " ".join(doc.split())
    lines = [f"## `{section.title}`", "", doc, "",
             f"Where: {section.where}; schema `{schema.__module__}.{schema.__qualname__}`."]
    group = section.title if section.title in GROUP_SCHEMAS or section.title == "space" else None
    if group:
        lines.append(f"Presets: {', '.join(f'`{group}={o}`' for o in group_options(group))}.")
    lines += ["", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        meta = f.metadata
        cells = [f"`{f.name}`", type_name(hints[f.name], meta), _default(f), allowed_text(meta), meta.get("help", "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""]


def render() -> str:
    """The whole page."""
    lines = ["# Configuration reference", "",
             "Generated from the settings schema by `python -m aebnas.cli.config_reference`; do not edit by hand.",
             "Each group's YAML presets under `aebnas/conf/` list only what they change; anything not listed keeps",
             "the default below. Override any key on the command line, e.g. `aebnas-search trainer.epochs=3`.",
             "A wrong key or value stops the command with one line naming the field and the fix.", ""]
    for section in sections():
        lines += render_section(section)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aebnas.cli.config_reference", description=__doc__)
    parser.add_argument("--out", type=Path, default=REFERENCE, help=f"where to write (default: {REFERENCE})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'stale; regenerate with python -m aebnas.cli.config_reference'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
