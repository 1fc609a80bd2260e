"""Draw the shipped project's own images with Pillow (run from the repository root: python assets/draw.py).

- ``assets/logo.png``: the wordmark of ``assets/wordmark.svg`` (plain type in a rectangle, made for this
  project; it is not the Society's trademark logo), 200x60 as ``site.logo`` says.
- ``content/images/mesems-trial-design.png``: a diagram of facts from the MESEMS story: 144 people,
  15 sites in 9 countries, a crossover of stem cells and placebo over two 24-week periods.

Pillow's bundled font is used, so the script needs no system fonts.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
NAVY, ORANGE, WHITE, GREY, INK = "#1f3a5f", "#d9531e", "#ffffff", "#e8edf3", "#1b1b1b"


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def centred(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, size: int, fill: str) -> None:
    left, top, right, bottom = box
    face = font(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=face)
    draw.text((left + (right - left - (x1 - x0)) / 2 - x0, top + (bottom - top - (y1 - y0)) / 2 - y0), text,
              font=face, fill=fill)


def wordmark(path: Path) -> None:
    image = Image.new("RGB", (200, 60), NAVY)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 52, 199, 59), fill=ORANGE)
    centred(draw, (0, 2, 200, 30), "National MS Society", 19, WHITE)
    centred(draw, (0, 28, 200, 52), "NEWS", 17, WHITE)
    image.save(path, optimize=True)


def trial_design(path: Path) -> None:
    image = Image.new("RGB", (1200, 630), WHITE)
    draw = ImageDraw.Draw(image)
    centred(draw, (0, 20, 1200, 90), "The MESEMS trial design", 46, INK)
    centred(draw, (0, 90, 1200, 140), "144 people with active MS  ·  15 sites  ·  9 countries", 30, INK)
    # Randomisation on the left, two arms crossing over at week 24.
    draw.rounded_rectangle((40, 250, 250, 470), radius=16, fill=GREY, outline=NAVY, width=3)
    centred(draw, (40, 300, 250, 360), "Randomly", 30, INK)
    centred(draw, (40, 360, 250, 420), "assigned", 30, INK)
    rows = ((190, "Stem cells (MSCs)", NAVY, WHITE, "Placebo", GREY, INK),
            (400, "Placebo", GREY, INK, "Stem cells (MSCs)", NAVY, WHITE))
    for top, first, first_fill, first_ink, second, second_fill, second_ink in rows:
        draw.line((250, 360, 300, top + 60), fill=NAVY, width=4)
        draw.rounded_rectangle((300, top, 700, top + 120), radius=14, fill=first_fill, outline=NAVY, width=3)
        centred(draw, (300, top, 700, top + 120), first, 34, first_ink)
        draw.rounded_rectangle((760, top, 1160, top + 120), radius=14, fill=second_fill, outline=NAVY, width=3)
        centred(draw, (760, top, 1160, top + 120), second, 34, second_ink)
        draw.polygon(((705, top + 45), (745, top + 60), (705, top + 75)), fill=ORANGE)
    centred(draw, (300, 540, 700, 590), "First 24 weeks", 28, INK)
    centred(draw, (760, 540, 1160, 590), "Next 24 weeks: switched over", 28, INK)
    image.save(path, optimize=True)


if __name__ == "__main__":
    wordmark(ROOT / "assets" / "logo.png")
    trial_design(ROOT / "content" / "images" / "mesems-trial-design.png")
