"""Generates the demo images (no third-party content, so freely usable): run from the repo root.

content.png: a landscape (sky, sun, hills with grass noise); style.png: two textures of different
colours, warm brush-like waves on top and cool dots below, so partitioned transfer has two
clearly different style regions to map.
"""

import numpy as np
from PIL import Image

rng = np.random.default_rng(7)
H, W = 256, 256
y, x = np.mgrid[0:H, 0:W] / H

# content: sky gradient, sun disk, two hills
sky = np.stack([0.35 + 0.3 * y, 0.55 + 0.3 * y, 0.95 - 0.1 * y], -1)
content = sky.copy()
sun = (x - 0.72) ** 2 + (y - 0.25) ** 2 < 0.012
content[sun] = [1.0, 0.85, 0.3]
hill1 = y > 0.62 + 0.12 * np.sin(3.2 * x + 0.5)
hill2 = y > 0.75 + 0.08 * np.cos(5 * x)
grass = 0.08 * rng.standard_normal((H, W))
content[hill1] = np.stack([0.25 + grass, 0.55 + grass, 0.2 + grass / 2], -1)[hill1]
content[hill2] = np.stack([0.15 + grass, 0.4 + grass, 0.12 + grass / 2], -1)[hill2]
Image.fromarray((np.clip(content, 0, 1) * 255).astype(np.uint8)).save("pst_core/demo/content.png")

# style: warm waves on top, cool dots below
style = np.zeros((H, W, 3))
waves = 0.5 + 0.5 * np.sin(40 * x + 6 * np.sin(9 * y))
style[:] = np.stack([0.9 * waves + 0.1, 0.45 * waves + 0.1, 0.1 + 0.1 * waves], -1)
dots = ((x * 16) % 1 - 0.5) ** 2 + ((y * 16) % 1 - 0.5) ** 2 < 0.09
cool = np.where(dots, 0.95, 0.15)
bottom = y > 0.5
style[bottom] = np.stack([0.1 + 0.2 * cool, 0.3 + 0.3 * cool, 0.4 + 0.55 * cool], -1)[bottom]
Image.fromarray((np.clip(style, 0, 1) * 255).astype(np.uint8)).save("pst_core/demo/style.png")
