"""What a run leaves on disk besides its models: training checkpoints and `config.json`.

A checkpoint is a folder `checkpoints/ckpt-<epoch>` holding the model weights (Keras'
`.weights.h5`, which reaches the variables of nested custom layers that `tf.train.Checkpoint`
misses under Keras 3), the optimizer's variables (step counter, learning rate, moments, EMA)
and the loop's counters (epoch, plateau state, best score). It is written under a temporary
name and renamed into place (`pnen_tf._atomic`), so a crash or `kill -9` never leaves a half
checkpoint and loses at most the epoch in progress; the next save removes what the killed one
left. The newest two are kept.

Under MultiWorkerMirroredStrategy every worker takes part in a save (reading some distributed
variables is a collective); only the chief's copy is kept, the others write to a scratch
folder that is removed afterwards (the pattern of the TensorFlow multi-worker guide).
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from pnen_tf._atomic import staged_dir, write_atomically

_NAME = re.compile(r"^ckpt-(\d+)$")


class TrainState:
    """Loop counters that must survive a restart."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.plateau_best = tf.Variable(float("inf"), dtype=tf.float64, trainable=False,
                                        name="plateau_best")
        self.plateau_wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.best_score = tf.Variable(float("-inf"), dtype=tf.float64, trainable=False,
                                      name="best_score")

    def as_dict(self):
        return {"epoch": int(self.epoch.numpy()), "plateau_best": float(self.plateau_best.numpy()),
                "plateau_wait": int(self.plateau_wait.numpy()),
                "best_score": float(self.best_score.numpy())}

    def load(self, values):
        for key, value in values.items():
            getattr(self, key).assign(value)


class Checkpointer:
    """Saves and restores (model, optimizer, state) under `<out>/checkpoints`."""

    def __init__(self, out, chief, worker, model, optimizer, state, max_to_keep=2):
        self.chief, self.worker = chief, worker
        self.directory = os.path.join(out, "checkpoints")
        self.model, self.optimizer, self.state = model, optimizer, state
        self.max_to_keep = max_to_keep

    def _existing(self):
        if not os.path.isdir(self.directory):
            return []
        found = [(int(m.group(1)), n) for n in os.listdir(self.directory)
                 if (m := _NAME.match(n))]
        return [os.path.join(self.directory, n) for _, n in sorted(found)]

    def restore_latest(self):
        """Restore the newest checkpoint (every worker reads the chief's); its path, or None."""
        existing = self._existing()
        if not existing:
            return None
        path = existing[-1]
        self.model.load_weights(os.path.join(path, "model.weights.h5"))
        with np.load(os.path.join(path, "optimizer.npz")) as arrays:
            values = [arrays[f"v{i}"] for i in range(len(arrays.files))]
        variables = self.optimizer.variables
        if len(values) != len(variables) or any(
                tuple(v.shape) != a.shape for v, a in zip(variables, values)):
            raise ValueError(f"{path}: optimizer state does not fit this model and optimizer "
                             f"({len(values)} saved variables, {len(variables)} expected)")
        for variable, value in zip(variables, values):
            variable.assign(value)
        with open(os.path.join(path, "state.json")) as f:
            self.state.load(json.load(f))
        return path

    def save(self):
        """Write `ckpt-<epoch>` atomically; its path (None on non-chief workers)."""
        if not self.chief:
            scratch = tempfile.mkdtemp(prefix=f".tmp-ckpt-w{self.worker}-")
            try:
                self._write(scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        path = os.path.join(self.directory, f"ckpt-{self.state.as_dict()['epoch']}")
        # An epoch redone after a crash: the new checkpoint replaces the old once complete.
        with staged_dir(path, replace=True) as staging:
            self._write(staging)
        for old in self._existing()[:-self.max_to_keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def _write(self, folder):
        self.model.save_weights(os.path.join(folder, "model.weights.h5"))
        np.savez(os.path.join(folder, "optimizer.npz"),
                 **{f"v{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump(self.state.as_dict(), f)


def write_json(path, data):
    """Write `data` as JSON to `path` atomically, readable as any file (0644 under umask 022)."""
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True))
