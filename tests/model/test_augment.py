import numpy as np
import pytest
import tensorflow as tf

from bnlab.model.augment import random_shift


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` (H, W, C) moved down dy and right dx pixels, zeros moved in."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def offsets_of(images: np.ndarray, out: np.ndarray, max_shift: int) -> list[tuple[int, int]]:
    """The (dy, dx) each output image is its input shifted by; fails if none is."""
    found = []
    span = range(-max_shift, max_shift + 1)
    for image, result in zip(images, out, strict=True):
        matches = [
            (dy, dx) for dy in span for dx in span if np.array_equal(shifted(image, dy, dx), result)
        ]
        assert matches, "an output image is not a shift of its input"
        found.append(matches[0])
    return found


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return mnist.train.images[:64]


def test_zero_shift_leaves_the_images_alone(digits):
    out = random_shift(tf.constant(digits), 0, tf.constant([0, 0]))
    np.testing.assert_array_equal(out, digits)


@pytest.mark.parametrize("max_shift", [1, 2])
def test_each_image_moves_by_its_own_offset_within_the_bound(digits, max_shift):
    out = random_shift(tf.constant(digits), max_shift, tf.constant([7, 3])).numpy()
    assert out.shape == digits.shape
    offsets = offsets_of(digits, out, max_shift)
    # 64 images, (2k+1)^2 possible offsets: several different ones must occur,
    # including the extremes on each axis.
    assert len(set(offsets)) > 4
    assert {dy for dy, _ in offsets} == set(range(-max_shift, max_shift + 1))
    assert {dx for _, dx in offsets} == set(range(-max_shift, max_shift + 1))


def test_shifts_are_a_pure_function_of_the_seed(digits):
    x = tf.constant(digits)
    first = random_shift(x, 1, tf.constant([5, 100])).numpy()
    np.testing.assert_array_equal(first, random_shift(x, 1, tf.constant([5, 100])))
    assert not np.array_equal(first, random_shift(x, 1, tf.constant([5, 101])))
    assert not np.array_equal(first, random_shift(x, 1, tf.constant([6, 100])))
