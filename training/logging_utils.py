"""Run logs: a CSV row and TensorBoard scalars per epoch, sample image triplets, a progress bar.

Only the chief writes; other workers get a `RunLog` whose writers are disabled.
"""

import csv
import os

import keras
import numpy as np
import tensorflow as tf

COLUMNS = ("epoch", "step", "loss", "lr", "val_psnr", "val_ssim", "baseline_psnr",
           "baseline_ssim", "seconds")


class RunLog:
    """`<out>/log.csv` and TensorBoard events under `<out>/tensorboard`."""

    def __init__(self, out, enabled, resumed_epoch=0):
        self.enabled = enabled
        self.csv_path = os.path.join(out, "log.csv")
        if not enabled:
            return
        os.makedirs(out, exist_ok=True)
        self._truncate_csv(resumed_epoch)
        self.writer = tf.summary.create_file_writer(os.path.join(out, "tensorboard"))

    def _truncate_csv(self, resumed_epoch):
        """Keep the rows of checkpointed epochs only: the others will be trained again."""
        rows = []
        if os.path.isfile(self.csv_path):
            with open(self.csv_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resumed_epoch]
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def epoch(self, row):
        """Append one epoch's `row` (keys from COLUMNS) and write its scalars."""
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow({k: row.get(k, "") for k in COLUMNS})
            f.flush()
            os.fsync(f.fileno())
        with self.writer.as_default(step=int(row["step"])):
            for key in COLUMNS[2:]:
                if row.get(key) is not None:
                    tf.summary.scalar(key, row[key])

    def images(self, step, triplets):
        """Sample (input, output, target) images side by side, clipped to [0, 1].

        An LR input is enlarged by pixel replication so that the three panels align.
        """
        if not self.enabled:
            return
        panels = []
        for inp, out, target in triplets:
            factor = target.shape[0] // inp.shape[0]
            inp = np.repeat(np.repeat(inp, factor, 0), factor, 1)
            panels.append(np.clip(np.concatenate([inp, out, target], axis=1), 0.0, 1.0))
        with self.writer.as_default(step=step):
            for index, panel in enumerate(panels):
                tf.summary.image(f"input_output_target/{index}", panel[None], step=step)
        self.writer.flush()


def progress_bar(steps, enabled):
    """A Keras progress bar over `steps` updates (silent when not `enabled`)."""
    return keras.utils.Progbar(steps, verbose=1 if enabled else 0, stateful_metrics=["lr"])
