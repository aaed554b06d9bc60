"""The applications built on the library, apart from it: what the `pnen-tf` command runs.

- `cli`: the `pnen-tf` console script, one subcommand per module (`COMMANDS`);
- `restore`: `pnen-tf restore`, whole images through a trained model, fed by its facts
  (`pnen_tf.model_info.ModelInfo`) and never by task code;
- `imresize`: MATLAB's antialiased bicubic, in TensorFlow, which restoring, the SR task
  (`training.tasks.sr`) and the SavedModel's `restore_image` share;
- `_outputs`: the checks of a command's output locations, made before it runs.

The library (`pnen_tf.layers`, `models`, `metrics`, `model_info`, `saving`, `staged`, ...)
uses Keras only and never imports this package; these modules may import TensorFlow.
"""
