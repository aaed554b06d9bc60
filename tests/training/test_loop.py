"""The training loop: eq. (5) loss, every task x model trains, plateau schedule, EMA, resume."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from pnen_tf import models
from training import checkpoints, data, loop
from training.tasks import configure

TINY = {"pnen": {"num_groups": 1}, "memnet": {"num_memory_blocks": 1, "num_recursions": 1},
        "rdn": {"num_blocks": 1, "num_layers": 2, "growth": 8}}
# Where the one non-local block goes in a one-block network (the paper's places are deeper).
POSITIONS = {"pnen": {}, "memnet": {"nonlocal_before": (1,)}, "rdn": {"nonlocal_after": (1,)}}


def _tiny(name, scale, multi_output, nonlocal_block="pnb"):
    in_channels = 3 if name == "pnen" or (name == "rdn" and scale > 1) else 1
    return models.build(name, scale=scale, in_channels=in_channels, channels=8,
                        nonlocal_block=nonlocal_block, multi_output=multi_output,
                        nonlocal_options={"scales": (2, 4)}, **TINY[name],
                        **(POSITIONS[name] if nonlocal_block else {})), in_channels


def _pairs(task, channels, scale, convention):
    rng = np.random.default_rng(0)
    # Smooth gradients plus texture: learnable in a few steps, unlike pure noise.
    ramp = np.linspace(0, 200, 48)[None, :, None] + np.linspace(0, 50, 48)[:, None, None]
    images = [(f"im{i}", np.clip(ramp + rng.normal(0, 10, (48, 48, channels)), 0, 255)
               .astype(np.uint8)) for i in range(2)]
    if task == "smooth":  # a cheap stand-in target: the mean of each image
        return [(im, np.full_like(im, int(im.mean()))) for _, im in images]
    return configure({"task": task, "scale": scale}).training_pairs(images, convention)


def test_eq5_loss_sums_the_mse_of_every_output():
    target = np.random.default_rng(0).random((2, 4, 4, 1)).astype(np.float32)
    outputs = [target + 0.1, target - 0.2, target]
    expected = (0.1**2 + 0.2**2) * np.ones(2)
    np.testing.assert_allclose(loop.per_example_loss(target, outputs).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(loop.per_example_loss(target, target + 0.5, "l1").numpy(),
                               [0.5, 0.5], rtol=1e-5)


@pytest.mark.parametrize("task,name,scale", [
    ("smooth", "pnen", 1), ("denoise", "memnet", 1), ("denoise", "rdn", 1),
    ("sr", "memnet", 3), ("sr", "rdn", 2)])
def test_every_task_and_model_trains(task, name, scale):
    keras.utils.set_random_seed(0)
    model, channels = _tiny(name, scale, multi_output=name != "rdn")
    convention = models.input_convention(name, scale)
    pairs = _pairs(task, channels, scale, convention)
    strategy = tf.distribute.get_strategy()
    optimizer = keras.optimizers.Adam(2e-3)
    dataset = data.train_dataset(pairs, patch=24, batch=4, seed=0,
                                 task=configure({"task": task, "scale": scale, "sigma": 30.0}))
    step = loop.make_train_step(strategy, model, optimizer, 4)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    losses = [float(step(iterator)) for _ in range(12)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert int(optimizer.iterations.numpy()) == 12


def test_plateau_halves_after_patience_down_to_the_floor():
    state = checkpoints.TrainState()
    lr = tf.Variable(5e-4)
    plateau = loop.Plateau(patience=2, min_lr=1e-4)
    history = [plateau.update(state, lr, loss) for loss in
               [1.0, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]]
    assert history[:3] == pytest.approx([5e-4] * 3)
    assert history[3] == pytest.approx(2.5e-4)  # two epochs without improvement
    assert history[4] == pytest.approx(2.5e-4)  # improved: counter reset
    assert history[6] == pytest.approx(1.25e-4)
    assert history[-1] == pytest.approx(1e-4)  # never below min_lr
    assert float(lr.numpy()) == pytest.approx(1e-4)


def test_checkpoint_restores_step_counter_and_lr_schedule(tmp_path):
    def setup():
        model, _ = _tiny("memnet", 1, multi_output=True, nonlocal_block=None)
        optimizer = keras.optimizers.Adam(5e-4)
        optimizer.build(model.trainable_variables)
        state = checkpoints.TrainState()
        ckpt = checkpoints.Checkpointer(str(tmp_path), True, 0, model, optimizer, state)
        return model, optimizer, state, ckpt

    model, optimizer, state, ckpt = setup()
    assert ckpt.restore_latest() is None
    _train_denoising_steps(model, optimizer, 3)
    plateau = loop.Plateau(patience=1)
    for loss in (1.0, 1.0):
        plateau.update(state, optimizer.learning_rate, loss)
    state.epoch.assign(2)
    ckpt.save()
    weights = [w.copy() for w in model.get_weights()]

    model, optimizer, state, ckpt = setup()
    assert ckpt.restore_latest().endswith("ckpt-2")
    assert int(optimizer.iterations.numpy()) == 3 and int(state.epoch.numpy()) == 2
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(2.5e-4)
    assert float(state.plateau_best.numpy()) == 1.0
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _train_denoising_steps(model, optimizer, steps):
    dataset = data.train_dataset(_pairs("denoise", 1, 1, "same"), patch=16, batch=2, seed=0,
                                 task=configure({"task": "denoise", "sigma": 30.0}))
    step = loop.make_train_step(tf.distribute.get_strategy(), model, optimizer, 2)
    iterator = iter(dataset)
    for _ in range(steps):
        step(iterator)


def test_ema_weights_are_used_inside_the_context_and_restored_after():
    model, _ = _tiny("rdn", 1, multi_output=False, nonlocal_block=None)
    optimizer = keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5)
    _train_denoising_steps(model, optimizer, 3)
    raw = [v.numpy().copy() for v in model.trainable_variables]
    with loop.EmaWeights(model, optimizer):
        averaged = [v.numpy().copy() for v in model.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(raw, averaged))
    for variable, value in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_validate_scores_model_and_baseline_alike():
    rng = np.random.default_rng(0)
    target = rng.random((32, 32, 3)).astype(np.float32)
    items = [{"input": target + 0.05, "target": target, "baseline": target + 0.05}]
    scores, triplets = loop.validate(lambda x: x, items)
    assert scores["val_psnr"] == pytest.approx(scores["baseline_psnr"])
    assert 20 < scores["val_psnr"] < 30
    scores, _ = loop.validate(lambda x: target, items)
    assert scores["val_psnr"] == float("inf") and scores["val_ssim"] == pytest.approx(1.0)
    assert len(triplets) == 1 and triplets[0][2] is target
