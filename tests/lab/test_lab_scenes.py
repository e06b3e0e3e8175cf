"""Tests for the procedural counting scenes (vlm_grpo.lab.scenes)."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from PIL import Image

from vlm_grpo.lab.scenes import (
    CLEVR_QUESTION,
    DOMAINS,
    SHAPES,
    SUPERCLEVR_QUESTIONS,
    Scene,
    question_for,
    render_scene,
)

# Any per-channel difference above this from the bare floor counts as "something drawn".
# Low on purpose: shadows then join their own object's blob, which makes merging *more* likely,
# so the blob count below is a strict check of the no-touching rule.
DIFF_THRESHOLD = 8


def _components(fg: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a boolean image (diagonal contact counts as touching)."""
    seen = np.zeros_like(fg, dtype=bool)
    h, w = fg.shape
    comps = []
    for sy, sx in zip(*np.nonzero(fg)):
        if seen[sy, sx]:
            continue
        seen[sy, sx] = True
        queue, comp = deque([(sy, sx)]), []
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        comps.append(comp)
    return comps


def _foreground(domain: str, seed: int) -> tuple[np.ndarray, Scene, np.ndarray]:
    img, scene, mask = render_scene(domain, seed, return_mask=True)
    # counts=(0, 0) renders the bare floor through the public API (the floor does not depend on seed).
    floor, empty = render_scene(domain, seed, counts=(0, 0))
    assert empty.count == 0
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(floor, np.int16)).max(axis=2)
    return diff > DIFF_THRESHOLD, scene, mask


@pytest.mark.parametrize("domain", DOMAINS)
def test_deterministic_per_seed(domain: str) -> None:
    a_img, a_scene = render_scene(domain, 7)
    b_img, b_scene = render_scene(domain, 7)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_scene == b_scene
    c_img, _ = render_scene(domain, 8)
    assert c_img.tobytes() != a_img.tobytes()


def test_domains_differ_for_same_seed() -> None:
    a, _ = render_scene(DOMAINS[0], 3)
    b, _ = render_scene(DOMAINS[1], 3)
    assert a.tobytes() != b.tobytes()


@pytest.mark.parametrize("domain", DOMAINS)
def test_count_matches_objects_and_range(domain: str) -> None:
    seen = set()
    for seed in range(500):
        img, scene = render_scene(domain, seed)
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (112, 112)
        assert scene.domain == domain
        assert scene.count == len(scene.objects)
        assert 3 <= scene.count <= 10
        assert all(o.shape in SHAPES for o in scene.objects)
        seen.add(scene.count)
    assert seen == set(range(3, 11))  # uniform over the inclusive range: every value shows up


@pytest.mark.parametrize("domain", DOMAINS)
def test_visible_blobs_equal_count(domain: str) -> None:
    for seed in range(100):
        fg, scene, mask = _foreground(domain, seed)
        comps = _components(fg)
        assert len(comps) == scene.count, f"seed {seed}: {len(comps)} blobs, count {scene.count}"
        # Each blob holds exactly one object's silhouette, so blobs and objects pair up one-to-one.
        labels = sorted({int(mask[y, x]) for comp in comps for y, x in comp if mask[y, x]})
        assert labels == list(range(1, scene.count + 1))
        for comp in comps:
            assert len({int(mask[y, x]) for y, x in comp} - {0}) == 1


@pytest.mark.parametrize("domain", DOMAINS)
def test_objects_are_visible_in_pixels(domain: str) -> None:
    for seed in range(50):
        fg, scene, mask = _foreground(domain, seed)
        for i in range(1, scene.count + 1):
            obj = mask == i
            assert obj.sum() >= 60, "objects must stay big enough to count at 112 px"
            assert fg[obj].mean() > 0.9, "an object's pixels must stand out from the floor"


def test_questions() -> None:
    qs = {render_scene("lab-clevr", s)[1].question for s in range(50)}
    assert qs == {CLEVR_QUESTION}
    qs = {render_scene("lab-superclevr", s)[1].question for s in range(200)}
    assert qs == set(SUPERCLEVR_QUESTIONS) and len(qs) >= 5
    assert question_for("lab-clevr", random.Random(0)) == CLEVR_QUESTION


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        render_scene("clevr", 0)
    with pytest.raises(ValueError, match="unknown domain"):
        question_for("nope", random.Random(0))
    for counts in [(5, 3), (-1, 2), (1, 999)]:
        with pytest.raises(ValueError, match="counts"):
            render_scene("lab-clevr", 0, counts=counts)
    with pytest.raises(ValueError, match="size"):
        render_scene("lab-clevr", 0, size=8)


@pytest.mark.parametrize("size", [48, 224])
def test_other_sizes_and_full_range(size: int) -> None:
    for seed in range(20):
        img, scene = render_scene("lab-superclevr", seed, size=size, counts=(1, 16))
        assert img.size == (size, size)
        assert 1 <= scene.count <= 16
        assert all(0 <= o.x < size and 0 <= o.y < size for o in scene.objects)
