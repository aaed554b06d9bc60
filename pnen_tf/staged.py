"""A functional model run stage by stage, every result on disk: long runs survive interruption.

PNEN took 4 hours of compute for a 2048x2048 image on a 2-core CPU (its attention is ~1.7 PMAC;
BENCHMARKS.md). `StagedForward` runs the model's layers one at a time in the graph's order, and a
non-local block branch by branch through the running residual sum of eq. (6)/(12), each stage
compiled by Keras for the backend. Each result is written atomically to a directory with the list of
stages done; run again with the same model, image and directory, it goes on from the first stage not
done. A result is deleted once every stage that reads it is done, and kept in memory only while a
later stage needs it: what is held is what the whole graph holds, plus at most one copy of a stage's
inputs and outputs at the Keras boundary.

The output equals the model's call: the same operations in the same order (inference mode),
bfloat16 results stored as float32, which holds them exactly. (Under mixed precision the whole
graph may fuse a layer's last convolution with the next layer's addition and round once where
the stages round twice: a bfloat16 step or two apart.)

Example:
    forward = StagedForward(model, "run-2048")
    y = forward(x)  # interrupted? call again: the stages done are not redone
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time

import keras
import numpy as np

from pnen_tf._atomic import TEMPORARY_PREFIX, write_atomically
from pnen_tf.layers.nonlocal_base import NonLocalBase

PROGRESS = "progress.json"


class StagedError(ValueError):
    """A staged run cannot go on: the directory, model or input is not what it expects."""


class _Apply(keras.layers.Layer):
    """A function of a list of tensors as a layer, so that Keras compiles it as a model.

    Its output specs are given, so building the stage's model traces nothing: the function only
    ever sees the tensors of a call, and the model's own layers get no new nodes (called on
    symbolic inputs, each would gain one per stage and image). No autocasting: the stage's
    inputs already have the dtypes of the model's tensors they stand for.
    """

    def __init__(self, fn, outputs, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.fn = fn
        self.specs = [(tuple(t.shape), t.dtype) for t in outputs]

    def call(self, inputs):
        outputs = keras.tree.flatten(self.fn(*inputs))
        return outputs if len(outputs) > 1 else outputs[0]

    def compute_output_spec(self, inputs):
        specs = [keras.KerasTensor(shape, dtype) for shape, dtype in self.specs]
        return specs if len(specs) > 1 else specs[0]


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
            directory, by one process at a time: another model, setting or input there is
            refused (`fingerprint`).
        on_stage: called as `on_stage(key, seconds)` after each stage computed and saved (not
            after a stage found done).
    """

    def __init__(self, model, directory, on_stage=None):
        check_stageable(model)
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
        os.makedirs(self.directory, exist_ok=True)
        with _exclusive(self.directory):
            self._open(fingerprint(self.model, inputs))
            return self._run_all(inputs)

    def _run_all(self, inputs):
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
            if self._branched(node):
                self._remove_used_partial_sums(node)
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

            def apply(*values):
                args, kwargs = node.arguments.fill_in({id(t): v for t, v in zip(tensors, values)})
                return node.operation(*args, **kwargs)

            results = self._compute(key, apply, node.outputs, tensors,
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
        keys, files = self._branch_keys(node), self._branch_files(node)
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

            (total,) = self._compute(key, partial_sum, node.outputs, [x_tensor] * len(arrays), arrays)
            self._save(path, total)
            self._mark_done(key)
            if index > 0:
                os.remove(files[index - 1])
        return total

    def _remove_used_partial_sums(self, node):
        """Partial sums whose next stage is done: left behind by a run stopped between that
        stage and the removal (a feature map each, 1 GB for PNEN at 2048x2048)."""
        for key, path in zip(self._branch_keys(node)[1:], self._branch_files(node)):
            if key in self.done and os.path.isfile(path):
                os.remove(path)

    def _compute(self, key, fn, outputs, tensors, arrays):
        """Stage `key`: `fn` of the input `arrays` (standing for the model's `tensors`; giving
        tensors like `outputs`), compiled by Keras as a model of its own; NumPy results."""
        symbolic = _inputs_like(tensors)
        stage = keras.Model(symbolic, _Apply(fn, outputs)(symbolic))
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
        return results

    @staticmethod
    def _branched(node):
        return isinstance(node.operation, NonLocalBase) and node.operation.branch_count > 1

    def _branch_keys(self, node):
        key = self.keys[id(node)]
        return [f"{key}.branch{i}" for i in range(node.operation.branch_count - 1)] + [key]

    def _branch_files(self, node):
        """Where each branch stage's result goes: a partial sum, and last the block's output."""
        keys = self._branch_keys(node)
        return [os.path.join(self.directory, f"{k}.npy") for k in keys[:-1]] + [
            self.files[id(node.outputs[0])]]

    # --- results and progress -----------------------------------------------------------------

    def _value(self, t):
        if self.values.get(id(t)) is None:
            path = self.files[id(t)]
            try:
                self.values[id(t)] = np.load(path)
            except (OSError, ValueError) as error:  # missing, truncated, not an array
                raise StagedError(f"{self.directory}: the result {os.path.basename(path)} of a "
                                  f"stage recorded as done cannot be read ({error}); remove the "
                                  f"directory to start over") from None
        return self.values[id(t)]

    def _release(self, t):
        if self.readers.get(id(t), 0) == 0 and id(t) not in self.keep:
            self.values.pop(id(t), None)
            path = self.files.get(id(t))
            if path and os.path.isfile(path):
                os.remove(path)

    def _save(self, path, array):
        write_atomically(path, lambda f: np.save(f, array))

    def _open(self, digest):
        path = os.path.join(self.directory, PROGRESS)
        stages = self.stage_keys()
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
            except (OSError, ValueError) as error:
                raise StagedError(f"{path} cannot be read ({error}); remove {self.directory} to "
                                  f"start over") from None
            if saved.get("fingerprint") != digest or saved.get("stages") != stages:
                raise StagedError(f"{self.directory} holds a staged run of another model, setting "
                                  f"or input; remove it or choose another directory")
            self.progress = saved
        else:
            if any(not name.startswith(TEMPORARY_PREFIX) for name in os.listdir(self.directory)):
                raise StagedError(f"{self.directory} is not empty and holds no {PROGRESS}: "
                                  f"choose an empty or new directory")
            self.progress = {"fingerprint": digest, "stages": stages, "done": {}}
            # Written before the first stage, so that a run stopped inside it is resumed too.
            self._write_progress()
        for name in os.listdir(self.directory):  # files being written when a run was killed
            if name.startswith(TEMPORARY_PREFIX):
                os.remove(os.path.join(self.directory, name))
        self.done = self.progress["done"]

    def _mark_done(self, key):
        self.done[key] = {"seconds": round(self.seconds, 3)}
        self._write_progress()
        self.on_stage(key, self.seconds)  # after the result is safe: a failing callback loses none

    def _write_progress(self):
        write_atomically(os.path.join(self.directory, PROGRESS), json.dumps(self.progress, indent=1))


def check_stageable(model):
    """Raise `StagedError` unless `model` is a functional Keras model (a graph of layer calls)."""
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise StagedError(f"a staged run needs a functional Keras model; got {type(model).__name__}")


def fingerprint(model, inputs):
    """A digest of all a staged run's results depend on: the model's architecture and settings
    (its config, e.g. a block's attention precision or tile budget), its weights, the dtype
    policy, the backend and the inputs (shapes, dtypes and values)."""
    try:
        config = json.dumps(model.get_config(), sort_keys=True, default=str)
    except NotImplementedError:  # a layer without get_config: its class and name at least
        config = json.dumps([(type(layer).__name__, layer.name) for layer in model.layers])
    digest = hashlib.sha256()
    for text in (config, keras.config.dtype_policy().name, keras.backend.backend()):
        digest.update(text.encode())
    for array in list(inputs) + [keras.ops.convert_to_numpy(w) for w in model.weights]:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(directory):
    """Hold `directory` for one run: a second process on it would overwrite the progress and
    remove results the first still needs. (An advisory lock, released when the process ends.)"""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StagedError(f"{directory} is in use by another staged run") from None
        yield
    finally:
        os.close(fd)


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
    """NumPy's own types as they are; bfloat16 (not one of them) as float32, which holds it
    exactly."""
    array = np.asarray(array)
    return array if array.dtype.kind in "biufc" else array.astype(np.float32)
