"""
Reference pages generated from the code, so they cannot drift from it.

- ``.. wsapp-config::`` walks the dataclasses of :mod:`wsapp.config.schema`: every key of
  ``config.yaml`` with its type, default, range or choices (field metadata) and the ``#:``
  comment above the field (read by Sphinx's own attribute-doc analyzer).
- ``.. wsapp-options:: twistd`` lists the options of ``twistd wsapp`` from
  :class:`wsapp.tap.Options` (``optParameters``, ``optFlags``, ``opt_*`` methods).
- ``.. wsapp-options:: wsapp-client`` lists the options of ``wsapp-client`` from the
  argparse parser that :func:`wsapp.cli.parse_args` builds.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.parsing import nested_parse_to_nodes

__all__ = ["config_keys", "setup"]

#: Mappings of sections by a name the operator chooses, shown with a placeholder.
PLACEHOLDERS = {"apps": "PATH", "namespaces": "NAME"}


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return f'``"{value}"``'
    if isinstance(value, bool):
        return f"``{str(value).lower()}``"
    if isinstance(value, tuple):
        return f"``{list(value)!r}``"
    return f"``{value!r}``"


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _section_class(field: dataclasses.Field[Any], default: Any) -> type | None:
    """The dataclass a field holds, or the dataclass of a mapping's values."""
    if dataclasses.is_dataclass(default):
        return type(default)
    if field.name in PLACEHOLDERS:
        from wsapp.config import schema

        kind = "AppConfig" if field.name == "apps" else "NamespaceConfig"
        return getattr(schema, kind)  # type: ignore[no-any-return]
    return None


def config_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], type]]:
    """Every leaf key under ``cls``, dotted, with its field and the class that declares it."""
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        default = _default(field)
        section = _section_class(field, default)
        if section is None:
            yield key, field, cls
        else:
            if field.name in PLACEHOLDERS:
                key = f"{key}.{PLACEHOLDERS[field.name]}"
            yield from config_keys(section, f"{key}.")


def _sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    yield prefix.rstrip("."), cls
    for field in dataclasses.fields(cls):
        section = _section_class(field, _default(field))
        if section is not None:
            key = f"{prefix}{field.name}"
            if field.name in PLACEHOLDERS:
                key = f"{key}.{PLACEHOLDERS[field.name]}"
            yield from _sections(section, f"{key}.")


class ConfigDirective(SphinxDirective):
    """Every configuration key, section by section."""

    def run(self) -> list[nodes.Node]:
        from wsapp.config import schema

        docs = ModuleAnalyzer.for_module(schema.__name__).find_attr_docs()
        self.env.note_dependency(inspect.getfile(schema))
        lines: list[str] = []
        for section, cls in _sections(schema.Config):
            title = f"``{section}``" if section else "Top level"
            lines += [f".. rubric:: {title}", ""]
            lines += [inspect.cleandoc(cls.__doc__ or ""), ""]
            depth = section.count(".") + 1 if section else 0
            for key, field, owner in config_keys(cls, f"{section}." if section else ""):
                if owner is not cls or key.count(".") != depth:
                    continue
                lines += self._entry(key, field, cls, docs)
        return nested_parse_to_nodes(self.state, "\n".join(lines), source=schema.__file__)

    def _entry(
        self,
        key: str,
        field: dataclasses.Field[Any],
        cls: type,
        docs: Mapping[tuple[str, str], list[str]],
    ) -> list[str]:
        default = _default(field)
        if default is dataclasses.MISSING:
            shown = "required"
        elif isinstance(default, Mapping):
            shown = ", ".join(f"``{name}``" for name in default) or "none"
        else:
            shown = _literal(default)
        lines = [f".. confval:: {key}", f"   :type: ``{field.type}``", f"   :default: {shown}", ""]
        lines += [f"   {line}" for line in docs.get((cls.__name__, field.name), [])]
        if "range" in field.metadata:
            low, high = field.metadata["range"]
            lines += [f"   Range: {_literal(low)} to {_literal(high)}.", ""]
        if "choices" in field.metadata:
            choices = ", ".join(_literal(choice) for choice in field.metadata["choices"])
            lines += [f"   One of {choices}.", ""]
        return [*lines, ""]


def _twistd_options() -> Iterator[tuple[str, str | None, str]]:
    """``(option, metavar, help)`` of ``twistd wsapp``."""
    from wsapp.tap import Options

    for long, short, default, help, *_ in Options.optParameters:
        names = f"-{short}, --{long}" if short else f"--{long}"
        text = help if default is None else f"{help} [default: {default}]"
        yield names, long.replace("-", "_").upper(), text
    for long, short, help in Options.optFlags:
        yield (f"-{short}, --{long}" if short else f"--{long}"), None, help
    for name, method in vars(Options).items():  # wsapp's own, not usage.Options' --help
        if name.startswith("opt_") and inspect.isfunction(method):
            yield f"--{name[4:]}", name[4:].upper(), inspect.getdoc(method) or ""


class _ParserBuiltError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _client_options() -> Iterator[tuple[str, str | None, str]]:
    """``(option, metavar, help)`` of ``wsapp-client``, from the parser it builds."""
    from wsapp import cli

    def capture(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise _ParserBuiltError(parser)

    # parse_args builds its parser inside; stop it at parsing to read the parser itself.
    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            cli.parse_args([])
        except _ParserBuiltError as captured:
            parser = captured.parser
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS):
            help = f"{help} [default: {action.default}]"
        if not action.option_strings:
            yield action.dest.upper(), None, help
            continue
        metavar = None if action.nargs == 0 else (action.metavar or action.dest.upper())
        yield ", ".join(action.option_strings), metavar, help


class OptionsDirective(SphinxDirective):
    """The options of one command: ``twistd`` (``twistd wsapp``) or ``wsapp-client``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        program = self.arguments[0]
        options = {"twistd": _twistd_options, "wsapp-client": _client_options}[program]
        lines = [f".. program:: {program}", ""]
        for names, metavar, help in options():
            if metavar is not None:
                names = ", ".join(f"{name} {metavar}" for name in names.split(", "))
            lines += [f".. option:: {names}", "", f"   {help}", ""]
        return nested_parse_to_nodes(self.state, "\n".join(lines))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("wsapp-config", ConfigDirective)
    app.add_directive("wsapp-options", OptionsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
