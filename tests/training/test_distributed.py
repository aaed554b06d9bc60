"""One loop for every strategy: 2 mirrored CPU replicas and 2 local workers train in lock-step.

Each case runs in a subprocess: logical devices and TF_CONFIG must be set before TensorFlow
starts, and a multi-worker run needs one process per worker.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import numpy as np

from pnen_tf import image_io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")

MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from pnen_tf import models
    from training import data, loop, strategy as strategies
    from training.tasks import configure

    rng = np.random.default_rng(0)
    images = [(str(i), rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)) for i in range(2)]
    denoise = configure({"task": "denoise", "sigma": 30.0})
    pairs = denoise.training_pairs(images, "same")

    def losses(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = models.build("memnet", channels=8, nonlocal_block=None, multi_output=True,
                                 num_memory_blocks=1, num_recursions=1,
                                 synchronized_bn=strategies.needs_synchronized_bn(strategy))
            optimizer = keras.optimizers.Adam(1e-3)
            optimizer.build(model.trainable_variables)
        dataset = data.train_dataset(pairs, patch=16, batch=4, seed=0, task=denoise)
        step = loop.make_train_step(strategy, model, optimizer, 4)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        return [float(step(iterator)) for _ in range(4)]

    mirrored = strategies.make_strategy("mirrored")
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync,
                      "mirrored": losses(mirrored), "one": losses(strategies.make_strategy("one"))}))
""")


def test_mirrored_two_replicas_match_one_device():
    result = subprocess.run([sys.executable, "-c", MIRRORED], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Global-batch averaging plus synchronised batch norm: the same numbers as one device.
    np.testing.assert_allclose(report["mirrored"], report["one"], rtol=2e-4)
    assert report["mirrored"][-1] < report["mirrored"][0]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_in_lock_step(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image_io.write_image(str(folder / f"{i}.png"), rng.random((32, 32, 1)).astype(np.float32))
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    argv = [sys.executable, "-m", "training.fit", "--task", "denoise", "--data", str(folder),
            "--val", str(folder), "--out", str(tmp_path / "run"), "--strategy", "multiworker",
            "--channels", "8", "--num-memory-blocks", "1", "--num-recursions", "1",
            "--nonlocal", "none", "--patch", "16", "--batch", "4", "--epochs", "2",
            "--steps-per-epoch", "3"]
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            processes.append(subprocess.Popen(
                argv, cwd=ROOT, env=dict(ENV, TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    losses = [re.findall(r"\[worker \d\] epoch (\d+): loss ([0-9.e+-]+)", o) for o in outputs]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    # Only the chief writes the run folder.
    assert os.path.isfile(tmp_path / "run" / "best.keras")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["ckpt-1", "ckpt-2"]
