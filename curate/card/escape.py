"""Escaping for strings that come from data (labels, paths, captions, stage names, YAML text).

A data card is Markdown that GitHub, Hugging Face and editors render with
inline HTML enabled, so a label named ``<img src=x onerror=alert(1)>`` or a
path containing ``](javascript:...)`` must render as text. Rules follow
CommonMark 0.31 / GFM: any ASCII punctuation may be backslash-escaped; code
spans are literal (no HTML, no links) and end at a backtick run of their own
length; inside a GFM table cell ``|`` must be written ``\\|`` even in a code
span. Every function returns one line (newlines would end a table row).
"""

from __future__ import annotations

import html as _html
import re

# Markdown punctuation that can start emphasis, links, images, code, tables, math or HTML; an
# intra-word "_" cannot (CommonMark's flanking rules), so "not_an_image" stays readable
_MD_SPECIAL = re.compile(r"([\\`*{}\[\]()#!|~<>&$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
# what makes a line a list item, heading underline or block quote when it starts it
_LINE_START = re.compile(r"^(\s*)([-+=>]|\d+(?=[.)]))")


def one_line(text: object) -> str:
    """``text`` as a string with every line break (``\\n``, ``\\r``, ``\\u2028`` ...) turned into a space."""
    s = "" if text is None else str(text)
    return " ".join(s.splitlines()) if s else s


def md(text: object) -> str:
    """Inline Markdown that renders exactly as ``text``: punctuation backslash-escaped, one line.

    Safe anywhere in a line, including its start (list markers are escaped too)."""
    s = _MD_SPECIAL.sub(r"\\\1", one_line(text))
    m = _LINE_START.match(s)
    if m:
        mark = m.group(2)
        s = m.group(1) + (mark + "\\" if mark[0].isdigit() else "\\" + mark) + s[m.end():]
    return s


def code(text: object, table: bool = True) -> str:
    """An inline code span holding ``text`` literally (safe in a table cell when ``table``)."""
    s = one_line(text)
    if table:
        s = s.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    ticks = "`" * (longest + 1)
    if not s or s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ")):
        s = f" {s} "
    return f"{ticks}{s}{ticks}"


def fence(text: str, lang: str = "") -> list[str]:
    """A fenced code block (as lines) that ``text`` cannot close early."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return [f"{ticks}{lang}", *text.splitlines(), ticks]


def html(text: object) -> str:
    """Text for an HTML element or attribute value."""
    return _html.escape("" if text is None else str(text), quote=True)


__all__ = ["one_line", "md", "code", "fence", "html"]
