"""CJK text in HTML: an embedded, subset font so Chinese grade names draw offline."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

# --------------------------------------------------------------------------------------------------------------
# CJK text in HTML: an embedded font subset

#: family name of the embedded font subset (added to the page's font stacks, before the generic family)
EMBEDDED_CJK_FAMILY = "segml CJK"
_FONT_STACK_SANS = (
    f'system-ui, -apple-system, blinkmacsystemfont, "Segoe UI", helvetica, arial, "{EMBEDDED_CJK_FAMILY}", '
    '"Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif'
)
_FONT_STACK_MONO = f'menlo, consolas, "DejaVu Sans Mono", "{EMBEDDED_CJK_FAMILY}", monospace'
_FONT_STYLE_ID = "segml-cjk-font"


def _cjk_font_path() -> Path | None:
    from segml.plots import cjk_font_file

    return cjk_font_file()


def cjk_font_subset(text: str) -> bytes | None:
    """An OpenType subset of Noto Sans CJK SC holding the glyphs of every non-ASCII character of ``text`` it
    covers (a few kB for a page of Chinese grade names), or None if there is none or no font."""
    path = _cjk_font_path()
    if path is None:
        return None
    from fontTools import subset

    wanted = {ord(ch) for ch in set(text) if ord(ch) > 0x2E7F}  # CJK radicals onward; Latin stays system
    if not wanted:
        return None
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    font = subset.load_font(str(path), options, lazy=True)
    cmap = font.getBestCmap()
    covered = sorted(wanted & set(cmap))
    if not covered:
        return None
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=covered)
    subsetter.subset(font)
    buffer = io.BytesIO()
    subset.save_font(font, buffer, options)
    return buffer.getvalue()


def embed_cjk_font(html_text: str) -> str:
    """Embed a CJK font subset in an HTML page so Chinese text renders on machines without a CJK font.

    The subset is a ``data:`` URI (nothing is fetched) declared as ``@font-face`` family
    :data:`EMBEDDED_CJK_FAMILY` and added to the page's sans-serif and monospace font stacks (nbconvert's
    ``--jp-*-font-family`` variables and ``body``). Pages without CJK characters are returned unchanged;
    a page that already has the font is returned unchanged.
    """
    if f'id="{_FONT_STYLE_ID}"' in html_text or "</head>" not in html_text:
        return html_text
    font = cjk_font_subset(html_text)
    if font is None:
        return html_text
    encoded = base64.b64encode(font).decode("ascii")
    style = (
        f'<style id="{_FONT_STYLE_ID}">'
        f'@font-face {{ font-family: "{EMBEDDED_CJK_FAMILY}"; '
        f'src: url(data:font/otf;base64,{encoded}) format("opentype"); }}\n'
        f":root {{ --jp-ui-font-family: {_FONT_STACK_SANS}; --jp-content-font-family: {_FONT_STACK_SANS}; "
        f"--jp-code-font-family: {_FONT_STACK_MONO}; --jp-code-font-family-default: {_FONT_STACK_MONO}; }}\n"
        f"body {{ font-family: {_FONT_STACK_SANS}; }}"
        "</style>"
    )
    head_end = html_text.index("</head>")
    page = html_text[:head_end] + style + html_text[head_end:]
    # Chromium lays out the first text run that needs a web font before the font is ready and can keep the
    # fallback (missing-glyph boxes) for that run; an off-screen run takes that hit instead of real text.
    body = re.search(r"<body[^>]*>", page)
    if body is None:
        return page
    sample = "".join(sorted({ch for ch in html_text if ord(ch) > 0x2E7F}))[:64]
    warm_up = (
        f'<span aria-hidden="true" style="position:absolute;left:-9999px;top:0;'
        f"font-family:'{EMBEDDED_CJK_FAMILY}'\">{html.escape(sample)}</span>"
    )
    return page[: body.end()] + warm_up + page[body.end() :]


def embedded_font(html_text: str) -> bytes | None:
    """The font subset :func:`embed_cjk_font` put into a page (None if the page has none)."""
    match = re.search(r"font/otf;base64,([A-Za-z0-9+/=]+)\)", html_text)
    return base64.b64decode(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------------------------
