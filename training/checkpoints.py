"""What a run leaves on disk besides its models: training checkpoints and `config.json`.

Checkpoints hold the model, the optimizer (its step counter and learning rate included) and
the loop's own state (epoch, plateau counters, best score), saved at the end of every epoch
with `tf.train.CheckpointManager`, whose writes land under temporary names and are renamed
into place: a crash or `kill -9` loses at most the epoch in progress.

Under MultiWorkerMirroredStrategy every worker takes part in a save (variables may need a
collective read); only the chief's copy is kept, the others write to a scratch folder that is
removed afterwards (the pattern of the TensorFlow multi-worker guide).
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf


class TrainState:
    """Loop counters that must survive a restart, as checkpointable variables."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.plateau_best = tf.Variable(float("inf"), dtype=tf.float64, trainable=False,
                                        name="plateau_best")
        self.plateau_wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.best_score = tf.Variable(float("-inf"), dtype=tf.float64, trainable=False,
                                      name="best_score")

    def trackables(self):
        return {"epoch": self.epoch, "plateau_best": self.plateau_best,
                "plateau_wait": self.plateau_wait, "best_score": self.best_score}


class Checkpointer:
    """Saves and restores (model, optimizer, state) under `<out>/checkpoints`."""

    def __init__(self, out, chief, worker, max_to_keep=2, **trackables):
        self.chief = chief
        self.worker = worker
        self.directory = os.path.join(out, "checkpoints")
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=max_to_keep)

    def restore_latest(self):
        """Restore the newest checkpoint (every worker reads the chief's); its path, or None."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is not None:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self):
        if self.chief:
            return self.manager.save()
        scratch = tempfile.mkdtemp(prefix=f"pnen-worker{self.worker}-")
        try:
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


def write_json(path, data):
    """Write `data` as JSON to `path` atomically (temporary file, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
