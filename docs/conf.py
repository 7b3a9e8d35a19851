"""Sphinx configuration of wsapp's documentation: ``sh .ci/docs`` builds it."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

import wsapp  # noqa: E402

project = "wsapp"
author = "the wsapp authors"
copyright = "the wsapp authors"
version = release = wsapp.__version__

extensions = ["sphinx.ext.autodoc", "wsapp_reference", "wsapp_bench"]
exclude_patterns = ["_build"]

# Offline and quick: no inventories fetched, no external links checked.
intersphinx_mapping: dict[str, tuple[str, None]] = {}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"wsapp {release}"
html_show_sourcelink = False
