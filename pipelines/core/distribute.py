"""Distribution strategy and precision policy, chosen once per run and stated in the logs."""

from __future__ import annotations

import functools
import os

import keras
import tensorflow as tf

from pipelines.core import multi_worker


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over every visible GPU (one or more), else the one CPU device."""
    if name == "multi_worker":
        return _multi_worker_strategy()  # first: listing devices would start TensorFlow without it
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if gpus else "one_device"
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPUs: tests split the CPU in two this way so that
        # multi-replica bugs show up without a GPU.
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    raise ValueError(f"unknown strategy {name!r}")


@functools.lru_cache(maxsize=1)
def _multi_worker_strategy() -> tf.distribute.Strategy:
    """One per process (it connects this worker to the cluster TF_CONFIG describes, checked first
    so that a missing or malformed one is a clear error, not a hang)."""
    multi_worker.parse_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()


def set_precision(name: str) -> str:
    """Sets the global Keras dtype policy and returns its name.

    auto: mixed_float16 on a GPU with tensor cores (compute capability >= 7.0), float32 otherwise:
    on a CPU mixed_float16 is several times slower than float32.
    """
    if name == "auto":
        name = "mixed_float16" if _gpu_supports_float16() else "float32"
    keras.mixed_precision.set_global_policy(name)
    return name


def _gpu_supports_float16() -> bool:
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if capability >= (7, 0):
            return True
    return False
