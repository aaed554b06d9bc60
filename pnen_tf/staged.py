"""A functional model run stage by stage, every result on disk: long runs survive interruption.

PNEN takes about 4.6 hours for a 2048x2048 image on a 2-core CPU (its attention is ~1.7 PMAC;
BENCHMARKS.md). `StagedForward` runs the model's layers one at a time in the graph's order, and a
non-local block branch by branch through the running residual sum of eq. (6)/(12), each stage
compiled by Keras for the backend. Each result is written atomically to a directory with the list
of stages done; run again with the same model, image and directory, it goes on from the first stage
not done. A result is deleted once every stage that reads it is done, and kept in memory only while
a later stage needs it: what is held is what the whole graph holds, plus at most one copy of a
stage's inputs and outputs at the Keras boundary.

The output equals the model's call: the same operations in the same order (inference mode),
bfloat16 results stored as float32, which holds them exactly. (Under mixed precision the whole
graph may fuse a layer's last convolution with the next layer's addition and round once where
the stages round twice: a bfloat16 step or two apart.)

Example:
    forward = StagedForward(model, "run-2048")
    y = forward(x)  # interrupted? call again: the stages done are not redone
"""

import hashlib
import json
import logging
import os
import time

import keras
import numpy as np

from pnen_tf.image_io import write_atomically
from pnen_tf.layers.nonlocal_base import NonLocalBase

PROGRESS = "progress.json"


class StagedError(ValueError):
    """A staged run cannot go on: the directory, model or input is not what it expects."""


class _Apply(keras.layers.Layer):
    """A function of a list of tensors as a layer, so that Keras compiles it as a model."""

    def __init__(self, fn, channels, **kwargs):
        super().__init__(**kwargs)
        self.fn, self.channels = fn, channels

    def call(self, inputs):
        return self.fn(*inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.channels,)


def _inputs_like(tensors):
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in tensors]


def _unique(tensors):
    seen, result = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            result.append(t)
    return result


class StagedForward:
    """Inference of a functional `model`, stage by stage, resumable from `directory`.

    `progress.json` there lists the stages and the seconds each took (`done`), across all runs.

    Args:
        model: a functional Keras model (the models of `pnen_tf.models`, or a loaded `.keras`).
        directory: where results and progress are kept; created if missing. One run per
            directory: another model or image there is refused.
        on_stage: called as `on_stage(key, seconds)` after each stage computed (not after a
            stage found done).
    """

    def __init__(self, model, directory, on_stage=None):
        if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
            raise StagedError(f"StagedForward needs a functional Keras model; got "
                              f"{type(model).__name__}")
        self.model, self.directory = model, directory
        self.on_stage = on_stage or (lambda key, seconds: None)
        self.seconds = 0.0
        self.nodes = _stage_order(model)
        self.keys = {id(node): f"{n:03d}-{node.operation.name}" for n, node in enumerate(self.nodes)}

    def stage_keys(self):
        """The stages in order: a node's key, and for a non-local block one per branch."""
        keys = []
        for node in self.nodes:
            keys.extend(self._branch_keys(node) if self._branched(node) else [self.keys[id(node)]])
        return keys

    def __call__(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(inputs) != len(self.model.inputs):
            raise StagedError(f"model takes {len(self.model.inputs)} inputs, got {len(inputs)}")
        inputs = [np.asarray(x) for x in inputs]
        self._open(self._fingerprint(inputs))
        self.values = {id(t): x for t, x in zip(self.model.inputs, inputs)}
        self.files = {}
        for node in self.nodes:
            for j, t in enumerate(node.outputs):
                self.files[id(t)] = os.path.join(self.directory, f"{self.keys[id(node)]}.{j}.npy")
        # A result is needed until every stage reading it is done; the outputs always.
        self.readers = {}
        for node in self.nodes:
            if self.keys[id(node)] not in self.done:
                for t in _unique(node.input_tensors):
                    self.readers[id(t)] = self.readers.get(id(t), 0) + 1
        self.keep = {id(t) for t in self.model.outputs}
        for node in self.nodes:
            if self.keys[id(node)] not in self.done:
                self._run(node)
            else:  # a result left behind when a run stopped between its reader and its removal
                for t in node.outputs:
                    self._release(t)
        outputs = [self._value(t) for t in self.model.outputs]
        return outputs if len(outputs) > 1 else outputs[0]

    # --- stages -----------------------------------------------------------------------------

    def _run(self, node):
        key = self.keys[id(node)]
        if self._branched(node):
            results = [self._run_branches(node)]
        else:
            tensors = _unique(node.input_tensors)
            symbolic = _inputs_like(tensors)
            args, kwargs = node.arguments.fill_in({id(t): s for t, s in zip(tensors, symbolic)})
            outputs = keras.tree.flatten(node.operation(*args, **kwargs))
            results = self._compute(key, keras.Model(symbolic, outputs),
                                    [self._value(t) for t in tensors])
            for j, result in enumerate(results):
                self._save(self.files[id(node.outputs[j])], result)
            self._mark_done(key)
        for t, result in zip(node.outputs, results):
            self.values[id(t)] = result
            self._release(t)  # dropped at once if nothing reads it
        for t in _unique(node.input_tensors):
            self.readers[id(t)] -= 1
            self._release(t)

    def _run_branches(self, node):
        """A non-local block as `residual_start(x) + branch_0(x)`, then `+ branch_i(x)` for each
        further branch: the order of its own call, each partial sum a stage of its own."""
        block, (x_tensor,) = node.operation, node.input_tensors
        keys = self._branch_keys(node)
        files = [os.path.join(self.directory, f"{k}.npy") for k in keys[:-1]]
        files.append(self.files[id(node.outputs[0])])
        total = None
        for index, (key, path) in enumerate(zip(keys, files)):
            if key in self.done:
                continue
            arrays = [self._value(x_tensor)]
            if index > 0:
                arrays.append(total if total is not None else np.load(files[index - 1]))

            def partial_sum(x, total=None, index=index):
                start = block.residual_start(x) if total is None else total
                return start + block.branch(x, index)

            symbolic = _inputs_like([x_tensor] * len(arrays))
            apply = _Apply(partial_sum, block.channels, dtype=block.dtype_policy)
            (total,) = self._compute(key, keras.Model(symbolic, apply(symbolic)), arrays)
            self._save(path, total)
            self._mark_done(key)
            if index > 0:
                os.remove(files[index - 1])
        return total

    def _compute(self, key, stage, arrays):
        start = time.perf_counter()
        # Each stage is its own model, compiled once by design: TensorFlow's warning about
        # functions traced again and again is noise here (a plain logger: no TensorFlow import).
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)
        try:
            results = stage.predict_on_batch(arrays if len(arrays) > 1 else arrays[0])
        finally:
            tf_logger.setLevel(level)
        results = [_storable(r) for r in (results if isinstance(results, list) else [results])]
        self.seconds = time.perf_counter() - start
        self.on_stage(key, self.seconds)
        return results

    @staticmethod
    def _branched(node):
        return isinstance(node.operation, NonLocalBase) and node.operation.branch_count > 1

    def _branch_keys(self, node):
        key = self.keys[id(node)]
        return [f"{key}.branch{i}" for i in range(node.operation.branch_count - 1)] + [key]

    # --- results and progress -----------------------------------------------------------------

    def _value(self, t):
        if self.values.get(id(t)) is None:
            path = self.files[id(t)]
            if not os.path.isfile(path):
                raise StagedError(f"{self.directory}: the result {os.path.basename(path)} of a stage "
                                  f"recorded as done is missing; remove the directory to start over")
            self.values[id(t)] = np.load(path)
        return self.values[id(t)]

    def _release(self, t):
        if self.readers.get(id(t), 0) == 0 and id(t) not in self.keep:
            self.values.pop(id(t), None)
            path = self.files.get(id(t))
            if path and os.path.isfile(path):
                os.remove(path)

    def _save(self, path, array):
        write_atomically(path, lambda f: np.save(f, array))

    def _fingerprint(self, inputs):
        digest = hashlib.sha256(self.model.name.encode())
        digest.update(keras.config.dtype_policy().name.encode())
        for array in inputs + [keras.ops.convert_to_numpy(w) for w in self.model.weights]:
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def _open(self, fingerprint):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, PROGRESS)
        self.progress = {"fingerprint": fingerprint, "stages": self.stage_keys(), "done": {}}
        if os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("fingerprint") != fingerprint or saved.get("stages") != self.progress["stages"]:
                raise StagedError(f"{self.directory} holds a staged run of another model or input; "
                                  f"remove it or choose another directory")
            self.progress = saved
        elif os.listdir(self.directory):
            raise StagedError(f"{self.directory} is not empty and holds no {PROGRESS}: "
                              f"choose an empty or new directory")
        self.done = self.progress["done"]

    def _mark_done(self, key):
        self.done[key] = {"seconds": round(self.seconds, 3)}
        write_atomically(os.path.join(self.directory, PROGRESS), json.dumps(self.progress, indent=1))


def _stage_order(model):
    """The model's layer calls in an order that runs each after its inputs, and among those ready
    the one nearest the outputs first: a side branch (PNEN's exit nets, eq. 3) is finished and its
    maps freed before the trunk goes on. (Keras' own order runs the whole trunk first, holding
    every group's map until the exits run: three more feature maps for PNEN.)"""
    depth = {id(node): d for d, nodes in model._nodes_by_depth.items() for node in nodes}
    remaining = [node for d in sorted(model._nodes_by_depth, reverse=True)
                 for node in model._nodes_by_depth[d] if node.operation is not None and not node.is_input]
    available, order = {id(t) for t in model.inputs}, []
    while remaining:
        ready = [node for node in remaining if all(id(t) in available for t in node.input_tensors)]
        node = min(ready, key=lambda n: depth[id(n)])  # the first such in Keras' order on ties
        order.append(node)
        remaining.remove(node)
        available.update(id(t) for t in node.outputs)
    return order


def _storable(array):
    """NumPy's own float types as they are; bfloat16 (not one of them) as float32, exactly."""
    array = np.asarray(array)
    return array if array.dtype.kind == "f" and array.dtype.itemsize >= 4 else array.astype(np.float32)
