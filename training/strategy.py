"""Choosing the `tf.distribute` strategy, once, at the entry point (tensorflow/models' rule).

'auto' picks MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster, MirroredStrategy
when several GPUs are visible, and the default (single-device) strategy otherwise. The rest of
the code works under any of them: `--batch` is the global batch.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multiworker", "one")


def _cluster_size():
    """Number of workers TF_CONFIG describes (0 without TF_CONFIG); names a malformed value."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw)["cluster"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' key: {raw[:200]!r}") \
            from None
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def make_strategy(name="auto"):
    """The strategy called `name` (one of STRATEGIES)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    if name == "auto":
        if _cluster_size() > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one"
    if name == "multiworker":
        if not _cluster_size():
            raise ValueError("--strategy multiworker needs TF_CONFIG describing the cluster "
                             "(see docs/training.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        # Without GPUs, mirror over the (logical) CPU devices: one normally, several in tests.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes logs, checkpoints and models (worker 0 / the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def worker_index(strategy):
    """This worker's index in the cluster (0 outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def needs_synchronized_bn(strategy):
    """Batch norm must average its statistics over replicas when a batch is split."""
    return strategy.num_replicas_in_sync > 1
