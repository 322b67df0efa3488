"""The reports open in a real headless browser (Debian's chromium): no console error, charts drawn, Chinese
grade names drawn as glyphs (not missing-glyph boxes) in the page and in the plots.

These tests are slow (they run the smoke experiment) and need Chromium and Playwright: `.ci/run` installs
chromium; on a developer machine `apt-get install -y chromium` before `make test-slow`. Screenshots go through
:mod:`browser` (Playwright driving the system chromium), which waits for ``document.fonts.ready`` and for every
image, so a busy machine cannot screenshot before the embedded font applies. A missing browser fails the test
(never a skip).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from browser import screenshot
from PIL import Image
from test_run import smoke_run

from segml import report
from segml.policy import default_policy_mapping

GRADE_NAMES = [g["name"] for g in default_policy_mapping()["grades"]]


def ink(png: Path) -> np.ndarray:
    """Grey levels of a screenshot (0 = black ink, 255 = white)."""
    return np.asarray(Image.open(png).convert("L"), dtype=np.int16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["index.html", "07_grading_report.html"])
def test_report_renders_in_chromium(name: str, tmp_path: Path) -> None:
    run = smoke_run()
    png = tmp_path / f"{name}.png"
    console = screenshot(run.root / "reports" / "smoke" / name, png)
    assert console == [], console
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] >= 1000
    non_white = (image < 245).any(axis=2).mean()
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert non_white > 0.03, f"{name}: page looks blank ({non_white:.1%} non-white pixels)"
    assert colours > 200, f"{name}: only {colours} colours: charts not drawn"


@pytest.mark.slow
def test_cjk_text_draws_glyphs_in_chromium(tmp_path: Path) -> None:
    """A line of the grade names' Chinese characters, through the embedded font, must not look like the same
    number of characters the font lacks (private-use code points: rendered as missing-glyph boxes), and must
    be as wide as full-width glyphs."""
    chars = "".join(dict.fromkeys(ch for name in GRADE_NAMES for ch in name if ord(ch) > 0x2E7F))
    assert len(chars) >= 8
    boxes = "".join(chr(0xE000 + i) for i in range(len(chars)))

    def page(text: str, file: str) -> Path:
        html = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='margin:10px'>"
            f"<p style='font-size:48px;line-height:60px'>{text}</p></body></html>"
        )
        path = tmp_path / file
        path.write_text(report.embed_cjk_font(html), encoding="utf-8")
        return path

    real, tofu = tmp_path / "real.png", tmp_path / "tofu.png"
    screenshot(page(chars, "real.html"), real, (1400, 300))
    screenshot(page(boxes, "tofu.html"), tofu, (1400, 300))
    real_ink, tofu_ink = ink(real), ink(tofu)
    assert (real_ink < 128).mean() > 0.005, "no text drawn"
    # each glyph cell of a missing-glyph line is the same box; real glyphs differ from it and from each other
    assert np.abs(real_ink - tofu_ink).mean() > 2.0

    # CJK glyphs are full width (advance 1 em = 48 px); missing-glyph boxes are about a third of that
    def inked_width(image: np.ndarray) -> int:
        columns = np.flatnonzero((image < 128).any(axis=0))
        return int(columns[-1] - columns[0]) if columns.size else 0

    assert inked_width(real_ink) > 0.85 * 48 * len(chars), "glyphs narrower than full width: boxes drawn"
    assert inked_width(tofu_ink) < 0.6 * inked_width(real_ink)


def test_plot_font_covers_grade_names() -> None:
    """Matplotlib draws the grade names with the CJK font (no 'Glyph missing' warning, every code point in
    the font's character map)."""
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager
    from matplotlib.figure import Figure

    from segml import plots

    family = plots.setup_fonts()
    assert family == plots.CJK_FONT_FAMILY
    path = font_manager.findfont(
        font_manager.FontProperties(family=["sans-serif"]), fallback_to_default=False
    )
    cmap = TTFont(path, fontNumber=0, lazy=True).getBestCmap()
    text = "".join(GRADE_NAMES) + "高净值客户VIP客户普通客户潜力客户"
    missing = sorted({ch for ch in text if not ch.isspace() and ord(ch) not in cmap})
    assert not missing, f"{Path(path).name} lacks {''.join(missing)}"
    figure = Figure(figsize=(6, 2))
    figure.text(0.01, 0.5, " ".join(GRADE_NAMES))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.fig_to_base64_png(figure)
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_missing_chromium_fails_the_test_never_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    import browser

    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("SEGML_CHROMIUM", raising=False)
    with pytest.raises(pytest.fail.Exception, match="chromium not installed"):
        browser.chromium_path()
