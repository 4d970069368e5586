"""Draws DiffuGen's app icon (1024x1024 PNG) from scratch: a rounded square with a deep violet-to-teal gradient,
a soft "diffusion" bloom of dots that sharpens toward the centre, and a bright lens mark. Run with Pillow:

    python3 icons/source/draw_icon.py icons/source/icon.png
    npx @tauri-apps/cli icon icons/source/icon.png -o icons

The second command makes the platform icon set in icons/ (PNG sizes, .ico, .icns)."""

import math
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

SIZE = 1024
RADIUS = 220


def lerp(a, b, t):
    return tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3))


def main(out):
    top, bottom = (52, 24, 110), (16, 150, 160)
    gradient = Image.new("RGB", (SIZE, SIZE))
    pixels = gradient.load()
    for y in range(SIZE):
        for x in range(SIZE):
            t = (0.65 * y + 0.35 * x) / SIZE
            pixels[x, y] = lerp(top, bottom, t)
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rounded_rectangle((40, 40, SIZE - 40, SIZE - 40), RADIUS, fill=255)
    icon = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    icon.paste(gradient, (0, 0), mask)

    # Noise turning into an image: scattered dots, denser and brighter toward the centre.
    dots = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(dots)
    rng = random.Random(7)
    centre = SIZE / 2
    for _ in range(2600):
        angle = rng.uniform(0, 2 * math.pi)
        distance = abs(rng.gauss(0, 190))
        x, y = centre + math.cos(angle) * distance, centre + math.sin(angle) * distance
        closeness = max(0.0, 1 - distance / 420)
        r = 3 + 9 * (1 - closeness)
        alpha = int(40 + 170 * closeness)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(235, 240, 255, alpha))
    dots = dots.filter(ImageFilter.GaussianBlur(2))
    icon.alpha_composite(Image.composite(dots, Image.new("RGBA", (SIZE, SIZE)), mask))

    # The lens: a bright ring with a sharp core.
    lens = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    ld = ImageDraw.Draw(lens)
    ld.ellipse((centre - 200, centre - 200, centre + 200, centre + 200), outline=(255, 255, 255, 235), width=44)
    ld.ellipse((centre - 70, centre - 70, centre + 70, centre + 70), fill=(255, 214, 120, 255))
    glow = lens.filter(ImageFilter.GaussianBlur(18))
    icon.alpha_composite(glow)
    icon.alpha_composite(lens)
    icon.save(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "icon.png")
