"""One training loop on `tf.distribute` for every strategy (single device, mirrored, multi-worker).

Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the step is
our own: `strategy.run` over `strategy.experimental_distribute_dataset`, gradients all-reduced
by the Keras optimizer. With one strategy-agnostic loop there is no second code path to rot.

Loss (eq. 5): for a multi-output model [Y, Y_1, ..., Y_M] (PNEN, MemNet),
L = (1 / hwc) (||G - Y||^2 + sum_m ||G - Y_m||^2); for a single output, the MSE (or the L1
distance, an option for RDN). Per-example losses are averaged over the *global* batch
(`tf.nn.compute_average_loss`), so the summed replica gradients equal the one-device gradient.

Learning rate (Sec. IV-A): halved when the epoch's training loss stops decreasing for
`patience` epochs, never below `min_lr` (1e-4 in the paper).
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from pnen_tf.metrics import calculate_psnr, calculate_ssim


@dataclasses.dataclass
class Plateau:
    """The paper's schedule: lr *= factor after `patience` epochs without a `min_delta` drop."""

    patience: int = 3
    factor: float = 0.5
    min_lr: float = 1e-4
    min_delta: float = 1e-3

    def update(self, state, learning_rate, epoch_loss):
        """Update `state` (a `TrainState`) with one epoch's loss; the new learning rate."""
        lr = float(learning_rate.numpy())
        if epoch_loss < float(state.plateau_best.numpy()) * (1.0 - self.min_delta):
            state.plateau_best.assign(epoch_loss)
            state.plateau_wait.assign(0)
            return lr
        state.plateau_wait.assign_add(1)
        if state.plateau_wait.numpy() >= self.patience and lr > self.min_lr:
            lr = max(lr * self.factor, self.min_lr)
            learning_rate.assign(lr)
            state.plateau_wait.assign(0)
        return lr


def per_example_loss(targets, outputs, kind="mse"):
    """Eq. (5) per example: the distance of every output to the target, summed over outputs."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    distance = tf.square if kind == "mse" else tf.abs
    return tf.add_n([tf.reduce_mean(distance(targets - tf.cast(y, tf.float32)), axis=[1, 2, 3])
                     for y in outputs])


def make_train_step(strategy, model, optimizer, global_batch, loss="mse", jit=False):
    """A `tf.function` that trains on the next distributed batch and returns the global loss.

    The replica step must not be a nested `tf.function`: synchronised batch norm all-reduces
    inside the forward pass, which TensorFlow only allows in the outer function. So `jit`
    XLA-compiles the whole step, which is supported on one device only.
    """
    if jit and strategy.num_replicas_in_sync > 1:
        raise ValueError("--jit compiles the whole training step and supports one device "
                         f"only; this strategy has {strategy.num_replicas_in_sync} replicas")

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            value = tf.nn.compute_average_loss(per_example_loss(targets, outputs, loss),
                                               global_batch_size=global_batch)
            # Scaled for mixed_float16 (a LossScaleOptimizer); identity otherwise.
            scaled = optimizer.scale_loss(value)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    @tf.function(jit_compile=jit)
    def step(iterator):
        losses = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step


def make_predict(model):
    """Whole-image inference, traced once for any size: float32 [H, W, C] -> float32."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, model.inputs[0].shape[-1]])])
    def predict(image):
        return tf.cast(model(image[None], training=False)[0], tf.float32)

    return lambda image: predict(tf.constant(image, tf.float32)).numpy()


def validate(predict, items, crop_border=0, test_y_channel=False, samples=2):
    """Mean PSNR/SSIM of the model and of the baseline over `items` (`data.validation_set`).

    Scores follow `pnen_tf.metrics` (8-bit rounding, `crop_border` shave, optional Y channel),
    as `training.evaluate` measures them. Returns (scores dict, sample triplets).
    """
    scores = {"val_psnr": [], "val_ssim": [], "baseline_psnr": [], "baseline_ssim": []}
    triplets = []
    for item in items:
        output = predict(item["input"])
        target = item["target"] * 255.0
        for name, image in (("val", output), ("baseline", item["baseline"])):
            scores[f"{name}_psnr"].append(
                calculate_psnr(target, image * 255.0, crop_border, test_y_channel))
            scores[f"{name}_ssim"].append(
                calculate_ssim(target, image * 255.0, crop_border, test_y_channel))
        if len(triplets) < samples:
            triplets.append((item["input"], output, item["target"]))
    return {k: float(np.mean(v)) for k, v in scores.items()}, triplets


@dataclasses.dataclass
class EpochResult:
    epoch: int
    step: int
    loss: float
    lr: float
    seconds: float


def train_epoch(step, iterator, steps, progbar, optimizer, epoch):
    """Run `steps` training steps; the epoch's mean loss (identical on every worker)."""
    start, total = time.time(), 0.0
    for i in range(steps):
        value = float(step(iterator))
        if not np.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at epoch {epoch}, step "
                                     f"{i + 1}; lower --lr or check the data")
        total += value
        progbar.update(i + 1, [("loss", value), ("lr", float(optimizer.learning_rate.numpy()))])
    return EpochResult(epoch, int(optimizer.iterations.numpy()), total / steps,
                       float(optimizer.learning_rate.numpy()), time.time() - start)


class EmaWeights:
    """Context in which the model holds the optimizer's EMA weights (when `use_ema` is on).

    Validation and saved models use the averaged weights; training resumes with the raw ones.
    """

    def __init__(self, model, optimizer):
        # A LossScaleOptimizer (mixed_float16) keeps the EMA in its inner optimizer.
        self.model = model
        self.optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self.backup = None

    def __enter__(self):
        if self.optimizer.use_ema:
            self.backup = [v.numpy() for v in self.model.trainable_variables]
            self.optimizer.finalize_variable_values(self.model.trainable_variables)
        return self.model

    def __exit__(self, *exc):
        if self.backup is not None:
            for variable, value in zip(self.model.trainable_variables, self.backup):
                variable.assign(value)
            self.backup = None
