"""What a restoration task is, in one class: `Task`.

A task module (`training/tasks/<name>.py`) subclasses `Task` and is registered in
`training.tasks.TASKS`. Everything that differs between tasks lives there:

- its flags for `training.fit` and `training.evaluate`, their resolution into the run
  configuration, and the configuration keys it owns (`neutral`: their values in the other
  tasks' runs, so a saved config.json keeps every key);
- the run name's suffix and the facts saved with a trained model;
- the degradation: training pairs made once per whole image, what is added per patch of the
  training stream (`train_input`), the validation input, and the evaluation pair of a
  benchmark image (the paper's protocol);
- the baseline the network has to beat, and the measuring protocol (Y channel, shave).

A configured task, `training.tasks.configure(settings)`, holds the settings of one run (a
config.json dict, or `training.evaluate`'s arguments).
"""

import numpy as np

from training import data


class Task:
    """Base of the tasks: a same-size task whose baseline is its input, measured on all
    channels without shave. Subclasses override what differs."""

    name = None
    help = ""
    default_model = "memnet"
    models = ("memnet", "rdn")
    baseline = None         # `training.evaluate --baseline` name
    neutral = {}            # config keys the task owns, and their values in other tasks' runs
    setting = None          # the key that tells its runs apart ("scale"), a flag of both tools
    fit_flags = {}          # {flag: argparse options} of `training.fit`
    evaluate_flags = {}     # {flag: argparse options} of `training.evaluate`
    suffix = None           # the run name's last part, formatted with the config: "x{scale}"

    def __init__(self, settings):
        self.settings = dict(settings)

    # Flags and configuration -------------------------------------------------------------

    @classmethod
    def add_fit_flags(cls, parser):
        """Add this task's flags to `training.fit`'s parser."""
        for flag, options in cls.fit_flags.items():
            parser.add_argument(flag, **options)

    @classmethod
    def add_evaluate_flags(cls, parser):
        """Add this task's flags to `training.evaluate`'s parser."""
        for flag, options in cls.evaluate_flags.items():
            parser.add_argument(flag, **options)

    @classmethod
    def resolve(cls, config, args):
        """Fill the task's keys of the run configuration from the flags; raise on bad ones."""
        config[cls.setting] = getattr(args, cls.setting)

    @classmethod
    def run_suffix(cls, config):
        """The last part of the default run name, `<task>-<model>-<suffix>`."""
        return cls.suffix.format(**config)

    @classmethod
    def facts(cls, config):
        """Facts saved with the model beyond the common ones (`training.fit`): its
        `ModelInfo`'s `extra`, read back with `info.get(key)`."""
        return {}

    @classmethod
    def valid_setting(cls, value):
        """Whether `setting`'s value can be evaluated."""
        return value is not None

    @classmethod
    def check_evaluation(cls, args, info):
        """Raise `ValueError` if `training.evaluate`'s arguments cannot run this task."""
        key = cls.setting
        if not cls.valid_setting(getattr(args, key, None)):
            raise ValueError(f"--task {cls.name} needs a valid --{key}, got "
                             f"{getattr(args, key, None)}{cls.invalid_note(info)}")

    @classmethod
    def requested_scale(cls, args):
        """The SR scale a model must have for `training.evaluate`'s arguments (None: any)."""
        return None

    @classmethod
    def invalid_note(cls, info):
        """Said after a missing setting's error: why the model (its `ModelInfo`) cannot
        supply it."""
        return ""

    # A configured task ---------------------------------------------------------------

    @property
    def scale(self):
        """How many times larger the target is than the degraded image."""
        return 1

    @property
    def shave(self):
        """Border pixels the protocol ignores."""
        return 0

    @property
    def test_y_channel(self):
        """Whether the protocol measures RGB images on BT.601 Y."""
        return False

    def training_pairs(self, images, convention, cache_root=None):
        """(input, target) uint8 pairs of whole images (path, image) for the training stream
        and validation; per-patch randomness comes later (`train_input`)."""
        return [(image, image) for _, image in images]

    def validation_pairs(self, images, convention, crop=0, cache_root=None):
        """The validation images' pairs, of their central `crop`-side windows (0: whole).

        The images are cropped before their pairs are made: a degradation acts locally, so a
        crop's pair is the pair's crop (and an LR input is made from the crop itself).
        """
        return self.training_pairs(data.center_crop(images, crop) if crop else images, convention,
                                   cache_root)

    def train_input(self, inp, element_seed):
        """A training patch's input (float32 tensor) for the stream element `element_seed`."""
        return inp

    def validation_levels(self):
        """Validation groups: [None], or the levels validated one by one (blind denoising)."""
        return [None]

    def validation_input(self, inp, rng, level=None):
        """A validation image's input (float32 [0, 1]) from its pair's input."""
        return inp

    def validation_baseline(self, inp, convention):
        """What the network must beat on validation, from the validation input."""
        return inp

    def evaluation_pair(self, path, truth):
        """(network input float32 in [0, 1], target uint8) of the benchmark image `truth`."""
        return truth.astype(np.float32) / 255.0, truth

    def restore_baseline(self, pixels):
        """The baseline's restoration of an evaluation input (`--baseline`)."""
        return pixels
