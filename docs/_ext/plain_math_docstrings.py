"""Read pgbook's docstrings as reStructuredText without mistaking their formulas for markup.

pgbook's docstrings write formulas in plain Unicode, as a reader types them: ``π(a|s)``,
``|A_i|``, shapes such as ``(*B, T)``, ``b*``, and formula lines indented under a sentence.
reStructuredText reads ``|`` as a substitution, a lone ``*`` as the start of emphasis, and an
indented line followed by an unindented one as a block quote that ends without a blank line;
every one of those is a warning, and the site is built with warnings as errors. Before
autodoc parses a docstring (after napoleon has turned its ``Args:`` sections into fields)
this extension

* escapes ``|`` and every ``*`` that does not open or close an emphasis pair (``*x*``,
  ``**x**``), outside inline literals, roles and literal blocks;
* shows an indented block under a sentence (a formula, its columns aligned by hand) as a
  literal block, as written;
* inserts a blank line where the indentation falls back (the end of a block quote, a
  definition, a literal block), which is what reStructuredText asks for.

Docstrings that are already valid reStructuredText render unchanged.
"""

from __future__ import annotations

import re

# inline literals, roles with their target, interpreted text, hyperlink references
_PROTECTED = re.compile(r"``.+?``|:[\w:+.-]+:`[^`]*`|`[^`]*`_{0,2}")
# an emphasis or strong pair that reStructuredText accepts (start after space or an opening
# bracket, end before space, punctuation or the end of the line)
_EMPHASIS = re.compile(r"(?:(?<=^)|(?<=[\s(\[{<'\"/-]))(\*\*?)(?=\S)(?:[^*\\]|\\.)+?(?<=\S)\1"
                       r"(?=$|[\s)\]}>'\".,;:!?/-])")
# directives whose content is not reStructuredText
_BULLET = re.compile(r"^\s*[*+-]\s+")
_ITEM = re.compile(r"^\s*([*+-]|\d+\.|#\.|\(?[a-z0-9]\))\s+")
# lines after which an indented block is reStructuredText, not a formula: directives and
# their options, fields (napoleon's :param x:), doctests
_MARKUP_LINE = re.compile(r"^\s*(\.\. |:[\w ,.*\\-]+:(\s|$)|>>>)")
_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")
_LITERAL_DIRECTIVE = re.compile(
    r"^\s*\.\. (code-block|code|sourcecode|math|doctest|testcode|testoutput|raw)::")


def _escape_text(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        escaped = i > 0 and text[i - 1] == "\\"
        out.append("\\" + ch if ch in "|*" and not escaped else ch)
    return "".join(out)


def _escape_line(line: str) -> str:
    bullet = _BULLET.match(line)
    head, line = (bullet.group(0), line[bullet.end():]) if bullet else ("", line)
    pieces, pos = [head], 0
    spans = [m.span() for m in _PROTECTED.finditer(line)]
    spans += [m.span() for m in _EMPHASIS.finditer(line)
              if not any(a <= m.start() < b for a, b in spans)]
    for start, end in sorted(spans):
        if start < pos:
            continue
        pieces.append(_escape_text(line[pos:start]))
        pieces.append(line[start:end])
        pos = end
    pieces.append(_escape_text(line[pos:]))
    return "".join(pieces)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _table_lines(lines: list[str]) -> set[int]:
    """The indices of the lines of simple tables (from the first ``===  ===`` border to the
    border followed by a blank line), left exactly as written: their columns are fixed."""
    inside, start = set(), None
    for i, line in enumerate(lines):
        if _BORDER.match(line):
            if start is None:
                start = i
            elif i + 1 == len(lines) or not lines[i + 1].strip():
                inside.update(range(start, i + 1))
                start = None
    return inside


def _text_indent(line: str) -> int:
    """Where the text of a line starts (after a bullet or an enumerator)."""
    item = _ITEM.match(line)
    return item.end() if item else _indent(line)


def rewrite(lines: list[str]) -> list[str]:
    """The docstring's lines with formula characters escaped, formula blocks shown as
    written and blank lines where the indentation falls back (see the module docstring)."""
    out: list[str] = []
    tables = _table_lines(lines)
    literal = None  # the indentation a literal block's lines must exceed
    prev = ""  # the previous line, blank or not
    last = None  # the last non-blank line
    for i, line in enumerate(lines):
        blank = not line.strip()
        if i in tables:
            out.append(line)
        elif literal is not None and (blank or _indent(line) > literal):
            out.append(line)  # inside a literal block: as written
        else:
            literal = None
            if not blank and prev.strip() and _indent(line) < _indent(prev):
                out.append("")  # an indented block ends: reStructuredText wants a blank line
            if (not blank and not prev.strip() and last is not None
                    and _indent(line) > _text_indent(last)
                    and not _MARKUP_LINE.match(last) and not last.rstrip().endswith("::")):
                # an indented block under a sentence is a formula, shown as written
                out += ["::", ""]
                literal = _text_indent(last)
                out.append(line)
            elif blank or line.lstrip().startswith(">>>"):
                out.append(line)
            else:
                out.append(_escape_line(line))
                if _LITERAL_DIRECTIVE.match(line) or (line.rstrip().endswith("::")
                                                      and not line.lstrip().startswith("..")):
                    literal = _indent(line)
        prev = line
        if not blank:
            last = line
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = rewrite(lines)


def setup(app):
    # after napoleon (priority 500), so its fields are already there
    app.connect("autodoc-process-docstring", _process, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
