"""`crop` and `zoom`: look again at a box of one of the sample's images.

A box is [x1, y1, x2, y2], relative to the image (0..1, the default) or in pixels. It is clamped to
the image; a box that is empty after clamping, inverted or under MIN_SIDE pixels is an error turn,
as is an image index that is not there. `crop` returns the region at its own pixels; `zoom`
enlarges it (factor 1-4), as a model with a fixed pixel budget sees a small crop at low
resolution. Either output is scaled down to at most MAX_OUTPUT_PIXELS, and its text says so. The
image a tool returns is fitted to the model's resolution when it enters the conversation, like any
prompt image.
"""

from __future__ import annotations

import math

from . import Arg, Tool, ToolError, ToolOutput, register_tool

MIN_SIDE = 4  # pixels: a smaller crop shows nothing a model's patch could resolve
MAX_OUTPUT_PIXELS = 1024 * 1024
MAX_ZOOM = 4.0

BOX_ARGS = {
    "box": Arg("array", length=4, items="number", doc="[x1, y1, x2, y2]"),
    "coordinates": Arg("string", required=False, choices=("relative", "pixel"), doc="relative (0..1) or pixel"),
    "image": Arg("integer", required=False, doc="which of the sample's images (0: the first)"),
}


def pixel_box(size: tuple[int, int], box, coordinates: str = "relative") -> tuple[int, int, int, int]:
    """The box in whole pixels, clamped to an image of `size` (width, height); ToolError if empty."""
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ToolError(f"the box {list(box)} holds a number that is not finite")
    if coordinates == "relative":  # clamped before scaling: -1e308 must not become -inf pixels
        x1, x2 = (min(max(v, 0.0), 1.0) * width for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), 1.0) * height for v in (y1, y2))
    left, right = max(0, round(min(x1, width))), max(0, round(min(x2, width)))
    top, bottom = max(0, round(min(y1, height))), max(0, round(min(y2, height)))
    if right <= left or bottom <= top:
        raise ToolError(
            f"the box {list(box)} is empty inside the {width}x{height} image ({coordinates} coordinates): "
            "give x1 < x2 and y1 < y2"
        )
    if right - left < MIN_SIDE or bottom - top < MIN_SIDE:
        raise ToolError(f"the box is {right - left}x{bottom - top} pixels; each side needs at least {MIN_SIDE}")
    return left, top, right, bottom


def _region(images, box, coordinates: str, image: int):
    if not 0 <= image < len(images):
        raise ToolError(f"there is no image {image}: this sample has {len(images)} (0 to {len(images) - 1})")
    source = images[image]
    bounds = pixel_box(source.size, box, coordinates)
    return source.crop(bounds), bounds


def _scaled(region, factor: float):
    """The region resized by `factor`, or less where that would pass MAX_OUTPUT_PIXELS; and the scale."""
    factor = min(factor, (MAX_OUTPUT_PIXELS / (region.width * region.height)) ** 0.5)
    if factor == 1.0:
        return region, factor
    size = (max(1, int(region.width * factor)), max(1, int(region.height * factor)))
    return region.resize(size, resample=3), factor  # bicubic


def crop(images, box, coordinates: str = "relative", image: int = 0) -> ToolOutput:
    region, bounds = _region(images, box, coordinates, image)
    out, scale = _scaled(region, 1.0)
    shrunk = "" if scale == 1.0 else f", scaled {scale:.2g}x to {out.width}x{out.height}"
    return ToolOutput(
        f"crop of image {image} at pixels {list(bounds)} ({region.width}x{region.height}){shrunk}", (out,)
    )


def zoom(images, box, coordinates: str = "relative", image: int = 0, factor: float = 2.0) -> ToolOutput:
    if not 1.0 <= factor <= MAX_ZOOM:
        raise ToolError(f"factor {factor} is outside 1 to {MAX_ZOOM:g}")
    region, bounds = _region(images, box, coordinates, image)
    out, scale = _scaled(region, factor)
    text = f"image {image} at pixels {list(bounds)}, scaled {scale:.2g}x to {out.width}x{out.height}"
    return ToolOutput(text, (out,))


register_tool(Tool("crop", "the region of an image inside box, at its own pixels", BOX_ARGS, crop, trusted=True))
register_tool(
    Tool(
        "zoom",
        "the region of an image inside box, enlarged by factor (default 2)",
        {**BOX_ARGS, "factor": Arg("number", required=False, doc="1 to 4")},
        zoom,
        trusted=True,
    )
)
