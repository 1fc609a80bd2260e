"""Branding from config.yaml: the colours and fonts every template uses, and their WCAG contrast check.

The templates read these as ``brand`` (``{{ brand.accent }}``), so a new organisation changes its look in
``config.yaml`` without editing a template; ``pipeline lint`` reports every pair below WCAG AA (4.5:1).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .colour import contrast, parse_colour

AA_CONTRAST = 4.5  # WCAG 2.1 AA for body text
_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_FONT_STACK = re.compile(r"^[A-Za-z0-9 ,'\"-]+$")


def _hex(value: str) -> str:
    if not _HEX_COLOUR.match(value):
        raise ValueError(f"{value!r}: write a colour as #rrggbb (six hex digits)")
    return value.lower()


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DarkColours(_Frozen):
    """The colours shown when the reader's system is in dark mode."""

    text: str = Field(default="#e6e9ee", description="Body text in dark mode.")
    muted: str = Field(default="#b4bcc8", description="Dates, citations and the legal line in dark mode.")
    background: str = Field(default="#1b2027", description="Page background in dark mode.")
    link: str = Field(default="#8cc2ff", description="Links in dark mode.")

    _colours = field_validator("*")(_hex)


class Branding(_Frozen):
    """Colours and fonts of the digest, the site pages and the forms."""

    accent: str = Field(default="#1f5fa8", description="Links and buttons (button text is accent_text).")
    accent_text: str = Field(default="#ffffff", description="Text on the accent colour and on the masthead.")
    masthead: str = Field(default="#c2410c", description="Background of the digest's masthead (logo bar).")
    text: str = Field(default="#1f2a37", description="Body text.")
    muted: str = Field(default="#5b6675", description="Dates, citations and the legal line.")
    background: str = Field(default="#ffffff", description="Page and column background.")
    font_stack: str = Field(default="Arial, Helvetica, sans-serif",
                            description="CSS font-family list; end it with a generic family (sans-serif).")
    dark: DarkColours = Field(default=DarkColours(), description="The dark-mode pairs.")

    _colours = field_validator("accent", "accent_text", "masthead", "text", "muted", "background")(_hex)

    @field_validator("font_stack")
    @classmethod
    def _font_stack(cls, value: str) -> str:
        if not _FONT_STACK.match(value):
            raise ValueError("use font names, commas and quotes only, e.g. Georgia, 'Times New Roman', serif")
        return value

    def pairs(self) -> list[tuple[str, str, str, str]]:
        """(foreground key, its colour, background key, its colour) of each pair readers see."""
        dark = self.dark
        return [
            ("text", self.text, "background", self.background),
            ("muted", self.muted, "background", self.background),
            ("accent", self.accent, "background", self.background),
            ("accent_text", self.accent_text, "accent", self.accent),
            ("accent_text", self.accent_text, "masthead", self.masthead),
            ("dark.text", dark.text, "dark.background", dark.background),
            ("dark.muted", dark.muted, "dark.background", dark.background),
            ("dark.link", dark.link, "dark.background", dark.background),
        ]

    def low_contrast(self) -> list[tuple[str, str, float]]:
        """(foreground key, background key, ratio) of each pair below WCAG AA."""
        found = []
        for fore_key, fore, back_key, back in self.pairs():
            fore_rgb, back_rgb = parse_colour(fore), parse_colour(back)
            assert fore_rgb is not None and back_rgb is not None  # validated as #rrggbb
            ratio = contrast(fore_rgb, back_rgb)
            if ratio < AA_CONTRAST:
                found.append((fore_key, back_key, ratio))
        return found
