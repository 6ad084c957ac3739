"""Sliding windows fed to Keras without materialising them.

The features stay in one tensor; each batch is a vector of target rows, gathered into
``(batch, sequence_length, features)`` with one ``tf.gather``. Training order is a fresh
permutation of the target rows every epoch, drawn from the run's seed and the epoch number.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .data import N_CLASSES

#: set by `trainer batch` in each pair's worker: the CPUs the pair was given
THREADS_ENV = "TRAINER_TF_THREADS"


def steps(n_targets: int, batch_size: int) -> int:
    """Batches per epoch: ``ceil(n_targets / batch_size)``, at least 1."""
    return max(1, math.ceil(n_targets / batch_size))


def window_dataset(
    features,
    labels,
    targets: np.ndarray,
    sequence_length: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    sample_weight_by_class: np.ndarray | None = None,
    with_labels: bool = True,
    first_epoch: int = 0,
):
    """A ``tf.data.Dataset`` of ``(windows, one_hot[, weights])`` batches.

    ``features`` / ``labels`` may be numpy arrays or tensors already on the device; pass the
    same tensors to every dataset of a run so the feature matrix is held once. With
    ``shuffle`` the dataset repeats forever, one permutation per epoch: use it with
    ``steps_per_epoch = steps(len(targets), batch_size)``. ``first_epoch``: where a resumed run
    starts, so its epochs see the same orders as an uninterrupted run's.
    """
    import tensorflow as tf

    feats = tf.convert_to_tensor(features, dtype=tf.float32)
    labs = tf.convert_to_tensor(labels, dtype=tf.int32)
    idx = tf.constant(np.asarray(targets, dtype=np.int64))
    offsets = tf.range(-sequence_length + 1, 1, dtype=tf.int64)
    weights = None
    if sample_weight_by_class is not None:
        weights = tf.constant(np.asarray(sample_weight_by_class, dtype=np.float32))

    if shuffle:
        seed_t = tf.constant(seed, tf.int64)

        def epoch_batches(epoch):
            order = tf.random.experimental.stateless_shuffle(idx, seed=tf.stack([seed_t, epoch]))
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        ds = tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64).flat_map(epoch_batches)
    else:
        ds = tf.data.Dataset.from_tensor_slices(idx).batch(batch_size)

    def gather(batch_idx):
        x = tf.gather(feats, batch_idx[:, None] + offsets)
        if not with_labels:
            return x
        y_int = tf.gather(labs, batch_idx)
        y = tf.one_hot(y_int, N_CLASSES)
        if weights is None:
            return x, y
        return x, y, tf.gather(weights, y_int)

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
    threads = os.environ.get(THREADS_ENV)
    if threads:
        # a pair given N cores keeps its input pipeline on them too, not on tf.data's own pool
        options = tf.data.Options()
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds


def windows_numpy(features: np.ndarray, targets: np.ndarray, sequence_length: int) -> np.ndarray:
    """The windows of a few targets as one numpy array (for inspection and tests; copies)."""
    offsets = np.arange(-sequence_length + 1, 1)
    return features[np.asarray(targets)[:, None] + offsets]
