"""Sphinx configuration for the djasynctest documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import djasynctest  # noqa: E402

project = "djasynctest"
author = "The djasynctest maintainers"
copyright = "2026, the djasynctest maintainers"
release = djasynctest.__version__
version = release

# No intersphinx: the docs must build offline, as in CI.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.extlinks", "sphinx.ext.viewcode"]
# :source:`tests/conformance/allowlist.txt`: a file of the repository, on GitHub.
extlinks = {"source": ("https://github.com/djasynctest/djasynctest/blob/main/%s", "%s")}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = True
nitpick_ignore_regex = [
    (r"py:class", r"(asyncio|unittest|django|collections\.abc)\..*"),
    # Private helper types in signatures: documented by the methods returning them.
    (r"py:class", r"djasynctest\._\w+\.\w+"),
]

html_theme = "furo"
html_title = "djasynctest"
exclude_patterns = ["_build"]
