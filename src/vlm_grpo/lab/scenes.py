"""Procedural counting scenes in two visual domains (CPU stand-ins for CLEVR and SuperCLEVR).

``lab-clevr`` imitates CLEVR: a flat grey floor with a soft vertical gradient, shaded cubes, spheres
and cylinders in CLEVR's eight colours, lit from the upper left, and the fixed CLEVR-cogen question.

``lab-superclevr`` draws the *same* three solids, but on a warm dark floor with a faint checker
texture, in a pastel/saturated non-CLEVR palette, lit from the right, at a smaller scale range and
with varied question wording. The shift is deliberately gentle: a tiny model trained on one domain
should transfer partly to the other, so in-domain vs. out-of-domain accuracy stays measurable.

Objects never touch (shadows included), so the number of visible blobs equals ``Scene.count``.
Everything is deterministic per ``(domain, seed, size, counts)``; no global RNG is used.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, overload

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DOMAINS = ("lab-clevr", "lab-superclevr")
SHAPES = ("cube", "sphere", "cylinder")
CLEVR_QUESTION = "How many items are there in the image?"
SUPERCLEVR_QUESTIONS = (
    "How many objects are in this picture?",
    "Count the objects in the image. How many are there?",
    "What is the number of things shown?",
    "How many shapes can you see?",
    "How many solids are there in the scene?",
    "What is the total number of objects in the image?",
)
MIN_SIZE = 48
MAX_COUNT = 16
_REF_SIZE = 112  # style radii are given in pixels at this image size
_FOOTPRINT = 1.15  # every drawn pixel (shadow included) lies within this many radii of the centre

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    x: float  # pixel centre
    y: float
    size: float  # radius-like size in pixels


@dataclass(frozen=True)
class Scene:
    domain: str
    count: int
    objects: tuple[SceneObject, ...]
    question: str


@dataclass(frozen=True)
class _Style:
    palette: tuple[tuple[str, RGB], ...]
    floor_top: RGB
    floor_bottom: RGB
    checker: float  # relative amplitude of the floor texture (0 = plain floor)
    light: int  # -1: lit from the left, +1: lit from the right
    radius: tuple[float, float]  # object radius range in px at _REF_SIZE
    shadow: float  # floor brightness factor inside shadows


_STYLES = MappingProxyType(
    {
        "lab-clevr": _Style(
            palette=(
                ("gray", (87, 87, 87)),
                ("red", (173, 35, 35)),
                ("blue", (42, 75, 215)),
                ("green", (29, 105, 20)),
                ("brown", (129, 74, 25)),
                ("purple", (129, 38, 192)),
                ("cyan", (41, 208, 208)),
                ("yellow", (255, 238, 51)),
            ),
            floor_top=(172, 172, 170),
            floor_bottom=(136, 136, 138),
            checker=0.0,
            light=-1,
            radius=(7.0, 12.5),
            shadow=0.72,
        ),
        "lab-superclevr": _Style(
            palette=(
                ("pink", (255, 140, 190)),
                ("orange", (255, 150, 40)),
                ("lime", (170, 235, 60)),
                ("teal", (0, 180, 160)),
                ("sky", (120, 190, 255)),
                ("lavender", (195, 165, 255)),
                ("ivory", (240, 235, 215)),
                ("magenta", (235, 60, 205)),
            ),
            floor_top=(62, 40, 38),
            floor_bottom=(120, 78, 52),
            checker=0.06,
            light=1,
            radius=(5.5, 10.5),
            shadow=0.55,
        ),
    }
)


def colour_names() -> list[str]:
    """Every colour name either domain draws with (for the tokenizer's corpus)."""
    return [name for style in _STYLES.values() for name, _ in style.palette]


def _check_domain(domain: str) -> _Style:
    if domain not in _STYLES:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    return _STYLES[domain]


def _check_args(size: int, counts: tuple[int, int]) -> None:
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")
    if len(counts) != 2 or not all(isinstance(c, int) for c in counts) or not 0 <= counts[0] <= counts[1] <= MAX_COUNT:
        raise ValueError(f"counts must be (lo, hi) ints with 0 <= lo <= hi <= {MAX_COUNT}, got {counts!r}")


def _derive_seed(domain: str, seed: int) -> int:
    # hashlib, not hash(): str hashing is salted per process and would break reproducibility.
    digest = hashlib.blake2b(f"{domain}|{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def question_for(domain: str, rng: random.Random) -> str:
    """The question for one scene; only ``lab-superclevr`` varies its wording."""
    _check_domain(domain)
    return CLEVR_QUESTION if domain == "lab-clevr" else rng.choice(SUPERCLEVR_QUESTIONS)


def _shade(rgb: RGB, k: float) -> RGB:
    # k > 1 blends toward white so bright colours (yellow, ivory) still get a visible highlight.
    r, g, b = rgb
    if k <= 1.0:
        return int(r * k), int(g * k), int(b * k)
    t = min(k - 1.0, 1.0)
    return int(r + (255 - r) * t), int(g + (255 - g) * t), int(b + (255 - b) * t)


def _background(style: _Style, size: int) -> Image.Image:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    top, bottom = np.array(style.floor_top, np.float32), np.array(style.floor_bottom, np.float32)
    floor = np.broadcast_to(top + (bottom - top) * t, (size, size, 3))
    if style.checker:
        cell = max(4, size // 8)
        yy, xx = np.indices((size, size))
        floor = floor * (1.0 + style.checker * (((yy // cell + xx // cell) % 2) * 2 - 1))[..., None]
    return Image.fromarray(np.clip(floor, 0, 255).astype(np.uint8), "RGB")


def _place(style: _Style, n: int, size: int, rng: random.Random) -> list[tuple[float, float, float]]:
    """Rejection-sample non-touching (x, y, r); shrink all radii and restart when the scene is too full."""
    scale = size / _REF_SIZE
    gap = 2.0 * scale + 2.5  # room for shadow blur and pixel rounding, so blobs never merge
    shrink = 1.0
    for _ in range(60):
        placed: list[tuple[float, float, float]] = []
        for _obj in range(n):
            for _try in range(80):
                r = rng.uniform(*style.radius) * scale * shrink
                m = _FOOTPRINT * r + 1.0
                x, y = rng.uniform(m, size - m), rng.uniform(m, size - m)
                if all(math.hypot(x - px, y - py) >= _FOOTPRINT * (r + pr) + gap for px, py, pr in placed):
                    placed.append((x, y, r))
                    break
            else:
                break
        if len(placed) == n:
            return placed
        shrink *= 0.92
    raise RuntimeError(f"could not place {n} objects in a {size}px image")


def _cube_polys(o: SceneObject, light: int) -> tuple[list[tuple[float, float]], ...]:
    """Front, top and side faces; the block recedes away from the light so its dark side shows."""
    s, d = 0.6 * o.size, 0.42 * o.size  # corners reach 0.81*sqrt(2) < _FOOTPRINT radii
    cx, cy = o.x + light * d / 2, o.y + d / 2
    x0, x1, y0, y1 = cx - s, cx + s, cy - s, cy + s
    ox, oy = -light * d, -d
    ex = x1 if light < 0 else x0
    front = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    top = [(x0, y0), (x1, y0), (x1 + ox, y0 + oy), (x0 + ox, y0 + oy)]
    side = [(ex, y0), (ex, y1), (ex + ox, y1 + oy), (ex + ox, y0 + oy)]
    return front, top, side


def _cyl_geom(o: SceneObject) -> tuple[float, float, float, float]:
    """Half-width, top-ellipse centre y, bottom-ellipse centre y and ellipse half-height."""
    w, h, e = 0.78 * o.size, 1.1 * o.size, 0.3 * o.size
    return w, o.y - h / 2, o.y + h / 2, e


def _draw_object(draw: ImageDraw.ImageDraw, o: SceneObject, rgb: RGB, light: int) -> None:
    x, y, r = o.x, o.y, o.size
    if o.shape == "sphere":
        # Concentric discs sliding toward the light fake radial shading with a highlight.
        for i in range(6):
            t = i / 6
            rr = r * (1.0 - 0.82 * t)
            cx, cy = x + light * 0.38 * r * t, y - 0.38 * r * t
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=_shade(rgb, 0.55 + 0.8 * t))
    elif o.shape == "cube":
        front, top, side = _cube_polys(o, light)
        draw.polygon(front, fill=_shade(rgb, 0.85))
        draw.polygon(top, fill=_shade(rgb, 1.25), outline=_shade(rgb, 0.8))
        draw.polygon(side, fill=_shade(rgb, 0.55))
    else:
        w, ty, by, e = _cyl_geom(o)
        draw.ellipse([x - w, by - e, x + w, by + e], fill=_shade(rgb, 0.7))
        # Vertical bands, brightest on the lit side, read as a curved surface even at 112 px.
        bands = 5
        for i in range(bands):
            u = (i + 0.5) / bands * 2 - 1  # -1 left .. +1 right
            k = 0.55 + 0.45 * (1 + light * u) / 2 + 0.15 * (1 - abs(u))
            draw.rectangle([x - w + 2 * w * i / bands, ty, x - w + 2 * w * (i + 1) / bands, by], fill=_shade(rgb, k))
        # The rim outline keeps the lit top readable when it nears floor brightness (gray objects).
        draw.ellipse([x - w, ty - e, x + w, ty + e], fill=_shade(rgb, 1.25), outline=_shade(rgb, 0.8))


def _draw_silhouette(draw: ImageDraw.ImageDraw, o: SceneObject, value: int, light: int) -> None:
    x, y, r = o.x, o.y, o.size
    if o.shape == "sphere":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=value)
    elif o.shape == "cube":
        for poly in _cube_polys(o, light):
            draw.polygon(poly, fill=value)
    else:
        w, ty, by, e = _cyl_geom(o)
        draw.ellipse([x - w, by - e, x + w, by + e], fill=value)
        draw.rectangle([x - w, ty, x + w, by], fill=value)
        draw.ellipse([x - w, ty - e, x + w, ty + e], fill=value)


def _cast_shadows(floor: Image.Image, objects: tuple[SceneObject, ...], style: _Style) -> Image.Image:
    size = floor.size[0]
    mask = Image.new("L", floor.size, 0)
    draw = ImageDraw.Draw(mask)
    for o in objects:
        # Reaches ~1.05 radii, inside _FOOTPRINT even after blurring, so a shadow never bridges two objects.
        cx, cy, r = o.x - style.light * 0.25 * o.size, o.y + 0.72 * o.size, o.size
        draw.ellipse([cx - 0.8 * r, cy - 0.32 * r, cx + 0.8 * r, cy + 0.32 * r], fill=200)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=size / _REF_SIZE))
    dark = floor.point(lambda v: int(v * style.shadow))
    return Image.composite(dark, floor, mask)


def random_objects(domain: str, n: int, size: int, rng: random.Random) -> tuple[SceneObject, ...]:
    """`n` non-touching objects of `domain`'s palette and sizes, placed in a `size` px image, back to front."""
    style = _check_domain(domain)
    placed = sorted(_place(style, n, size, rng), key=lambda p: p[1])  # back-to-front painter's order
    return tuple(
        SceneObject(shape=rng.choice(SHAPES), color=rng.choice(style.palette)[0], x=x, y=y, size=r)
        for x, y, r in placed
    )


def draw_objects(domain: str, objects: tuple[SceneObject, ...], size: int) -> Image.Image:
    """`domain`'s floor at `size` px with `objects` on it (in the order given), shadows and shading included."""
    style = _check_domain(domain)
    colours = dict(style.palette)
    img = _cast_shadows(_background(style, size), objects, style)
    draw = ImageDraw.Draw(img)
    for o in objects:
        _draw_object(draw, o, colours[o.color], style.light)
    return img


@overload
def render_scene(
    domain: str, seed: int, size: int = ..., counts: tuple[int, int] = ..., return_mask: Literal[False] = ...
) -> tuple[Image.Image, Scene]: ...
@overload
def render_scene(
    domain: str, seed: int, size: int = ..., counts: tuple[int, int] = ..., *, return_mask: Literal[True]
) -> tuple[Image.Image, Scene, np.ndarray]: ...


def render_scene(
    domain: str, seed: int, size: int = 112, counts: tuple[int, int] = (3, 10), return_mask: bool = False
) -> tuple[Image.Image, Scene] | tuple[Image.Image, Scene, np.ndarray]:
    """Render one scene: an RGB ``size``x``size`` image plus the ``Scene`` that was drawn.

    With ``return_mask=True`` also returns a uint8 ``(size, size)`` label array where pixel value
    ``i + 1`` marks ``scene.objects[i]`` (0 = floor), for tests and debugging.
    """
    style = _check_domain(domain)
    _check_args(size, counts)
    rng = random.Random(_derive_seed(domain, seed))
    n = rng.randint(*counts)
    question = question_for(domain, rng)
    objects = random_objects(domain, n, size, rng)
    img = draw_objects(domain, objects, size)
    scene = Scene(domain=domain, count=len(objects), objects=objects, question=question)
    if not return_mask:
        return img, scene
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    for i, o in enumerate(objects):
        _draw_silhouette(mdraw, o, i + 1, style.light)
    return img, scene, np.asarray(mask, dtype=np.uint8)
