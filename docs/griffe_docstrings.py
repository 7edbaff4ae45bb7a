"""A griffe extension that adapts gmmjax's docstrings to mkdocstrings.

- ``Example:`` (singular, the house style) is read as the ``Examples:`` section, so
  doctests render as code instead of Markdown;
- Sphinx roles (``:func:`gmmjax.fit```, ``:class:`GMM```) become optional
  cross-references: a link where the API reference has the name, inline code where it
  does not (so a role never breaks the strict build).
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj|exc):`~?([^`]+)`")


def _link(match: re.Match) -> str:
    text = match.group(1)
    titled = re.fullmatch(r"(.*?)\s*<([\w.]+)>", text)
    title, name = titled.groups() if titled else (text, text)
    target = name if name.startswith("gmmjax.") else f"gmmjax.{name}"
    label = title if titled else f"<code>{title}</code>"
    return f'<autoref identifier="{target}" optional>{label}</autoref>'


def rewrite(text: str) -> str:
    """The docstring text with both rewrites applied."""
    return _ROLE.sub(_link, _EXAMPLE.sub(r"\1Examples:", text))


class GmmjaxDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded objects once, when it is loaded."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
