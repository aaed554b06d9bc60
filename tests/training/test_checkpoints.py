"""Checkpoints and config.json: atomic, readable by others, leftovers of a killed save removed."""

import json
import os

import keras
import numpy as np

from training import checkpoints


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _model_and_optimizer():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_save_removes_a_killed_saves_staging_and_restores(tmp_path):
    leftover = tmp_path / "checkpoints" / ".tmp-ckpt-w0-3f9_kq2z"  # `kill -9` mid-save
    leftover.mkdir(parents=True)
    (leftover / "model.weights.h5").write_bytes(b"half")
    os.utime(leftover, (0, 0))
    model, optimizer = _model_and_optimizer()
    state = checkpoints.TrainState()
    state.epoch.assign(3)
    saved = checkpoints.Checkpointer(str(tmp_path), True, 0, model, optimizer, state).save()
    assert os.listdir(tmp_path / "checkpoints") == ["ckpt-3"]
    assert os.stat(saved).st_mode & 0o777 == 0o777 & ~_umask()

    other, other_optimizer = _model_and_optimizer()
    other_state = checkpoints.TrainState()
    restorer = checkpoints.Checkpointer(str(tmp_path), True, 0, other, other_optimizer, other_state)
    assert restorer.restore_latest() == saved
    assert other_state.as_dict()["epoch"] == 3
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_config_json_is_readable_by_others(tmp_path):
    path = tmp_path / "run" / "config.json"
    checkpoints.write_json(str(path), {"task": "sr", "scale": 3})
    assert json.loads(path.read_text()) == {"scale": 3, "task": "sr"}
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert os.listdir(path.parent) == ["config.json"]
