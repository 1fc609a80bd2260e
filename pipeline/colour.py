"""WCAG colour contrast, shared by the pre-send checks and the browser tests.

Low-contrast text is both an accessibility failure and a spam signal
(SpamAssassin's HTML_FONT_LOW_CONTRAST), so the same arithmetic serves both.
"""

from __future__ import annotations

import re

NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "transparent": None}
_HEX = re.compile(r"^#([0-9a-f]{3}|[0-9a-f]{6})$")
_RGB = re.compile(r"^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:[,\s/]+([\d.]+))?\s*\)$")

RGB = tuple[float, float, float]


def parse_colour(value: str) -> RGB | None:
    """#rgb, #rrggbb, rgb()/rgba() or a few names; None for what is transparent or not understood."""
    value = value.strip().lower().removesuffix("!important").strip()
    if value in NAMED:
        return NAMED[value]
    if match := _HEX.match(value):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    if match := _RGB.match(value):
        if match.group(4) is not None and float(match.group(4)) == 0:
            return None
        return tuple(float(match.group(i)) for i in (1, 2, 3))  # type: ignore[return-value]
    return None


def luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    """The WCAG 2.1 contrast ratio, 1 to 21; 4.5 is the AA minimum for body text."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)
