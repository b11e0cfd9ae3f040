"""Random translations of the training images (data augmentation).

Each image of a batch moves by its own random offset of up to `max_shift`
pixels along each axis; pixels moved in from outside are background (0). The
offsets are drawn from a stateless generator keyed by (seed, step), so they are
a pure function of the step like the batch order: a resumed run, a rerun and a
BN run's no-BN twin all see the same shifted images.
"""

from __future__ import annotations

import tensorflow as tf


def random_shift(images: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """`images` (N, H, W, C), each shifted by up to `max_shift` pixels per axis.

    `seed` is a shape-[2] integer tensor for `tf.random.stateless_uniform`.
    """
    if max_shift == 0:
        return images
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    padding = [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]]
    padded = tf.pad(images, padding)
    # Offset k into the padded image means a shift of max_shift - k.
    offsets = tf.random.stateless_uniform(
        [2, n], seed, minval=0, maxval=2 * max_shift + 1, dtype=tf.int32
    )
    rows = offsets[0][:, None] + tf.range(height)[None, :]
    cols = offsets[1][:, None] + tf.range(width)[None, :]
    # Two gathers (rows, then columns) crop each image at its own offset.
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)
