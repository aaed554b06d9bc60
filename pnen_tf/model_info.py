"""A model's facts, one record: `ModelInfo`, read from and written into every artifact.

A trained model carries what it was trained for and how it is fed: its family (`model`), the
task and its setting (`scale`, `sigma`, `filter`, and a task's own facts such as `quality`),
`in_channels`, the input convention (`input`: "lr", the low-resolution image; "upsampled",
the bicubic-upsampled one; "same", an image of the output's size), the build options and
the version that wrote it. The same JSON object travels inside each artifact, where the
runtimes ignore it, so a model copied on its own can still be restored, exported or evaluated:

- a `.keras` file: the zip member `KERAS_MEMBER`;
- a SavedModel folder: the asset `assets/SAVED_MODEL_ASSET` (it stays with the version
  folder when that is copied);
- an ONNX file: the metadata property `ONNX_METADATA_KEY` (onnxruntime shows it in
  `get_modelmeta().custom_metadata_map`).

`ModelInfo.read(path)` is the one reader and `info.write(path)` the one writer, for all three.
A fact that was not recorded is None: files saved by plain Keras hold none, files of older
versions fewer. `completed` fills in what feeding the model needs, from the model itself.

Example:
    >>> info = ModelInfo.from_dict({"task": "jpeg", "quality": 10, "in_channels": 1})
    >>> info.task, info.scale, info.get("quality")
    ('jpeg', None, 10)
    >>> info.to_dict()
    {'quality': 10, 'task': 'jpeg', 'in_channels': 1}
"""

import dataclasses
import json
import os
import zipfile

import numpy as np

KERAS_MEMBER = "pnen_tf.json"
SAVED_MODEL_ASSET = "pnen_tf.json"
ONNX_METADATA_KEY = "pnen_tf"
INPUT_CONVENTIONS = ("lr", "upsampled", "same")
PROBE_SIDE = 16  # side of the zero image whose output tells an undocumented model's scale


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The facts of one model; None where a fact was not recorded.

    Attributes:
        model: the family, a name of `pnen_tf.models.FAMILIES` ("pnen", "memnet", "rdn").
        task: the task it was trained for ("sr", "denoise", "smooth", "jpeg").
        scale: how many times larger the output is than the degraded image (SR), else 1.
        in_channels: 1 (gray) or 3 (RGB).
        input: "lr", "upsampled" or "same" (`INPUT_CONVENTIONS`).
        sigma, filter: the denoising noise level, the smoothing filter.
        options: the keyword arguments of `pnen_tf.models.build` that made it.
        pnen_tf_version: the version that trained it.
        export: what an exporter adds: its source file, versions, ONNX opset.
        extra: every other fact, kept as recorded: a task's own (`quality`, `sigma_range`),
            `preset` (a model loaded by name), keys of versions to come.
    """

    model: str | None = None
    task: str | None = None
    scale: int | None = None
    in_channels: int | None = None
    input: str | None = None
    sigma: float | None = None
    filter: str | None = None
    options: dict | None = None
    pnen_tf_version: str | None = None
    export: dict | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, facts):
        """The record of a JSON object's facts (null: not recorded); keys that name no field
        go to `extra`."""
        if not isinstance(facts, dict):
            raise ValueError(f"a model's facts are a JSON object, got {type(facts).__name__}")
        known = {key: value for key, value in facts.items() if key in _FIELDS}
        return cls(**known, extra={k: v for k, v in facts.items()
                                   if k not in _FIELDS and v is not None})

    @classmethod
    def of(cls, facts):
        """`facts` as a record: a `ModelInfo` itself, a dict (`from_dict`), None (no facts)."""
        return facts if isinstance(facts, ModelInfo) else cls.from_dict(facts or {})

    def to_dict(self):
        """The recorded facts as one flat JSON-able dict (not recorded: absent)."""
        recorded = {**self.extra, **{name: getattr(self, name) for name in _FIELDS}}
        return {key: value for key, value in recorded.items() if value is not None}

    def to_json(self):
        """The JSON text every artifact stores."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def get(self, key, default=None):
        """A fact by its name, a field's or an extra one's (`default` if not recorded)."""
        return self.to_dict().get(key, default)

    def updated(self, **facts):
        """These facts with `facts` added or replaced (None removes one)."""
        return ModelInfo.from_dict({**self.to_dict(), **facts})

    @classmethod
    def read(cls, path):
        """The facts recorded in a `.keras` file (or the preset a name stands for), a SavedModel
        folder or an `.onnx` file; `ModelInfo()` where none are (plain Keras, plain TF).

        Raises `FileNotFoundError` / `ValueError` naming `path` for a missing or foreign file.
        """
        if os.path.isdir(path):
            asset = os.path.join(path, "assets", SAVED_MODEL_ASSET)
            text = _read_text(asset) if os.path.isfile(asset) else None
        elif str(path).endswith(".onnx"):
            text = _onnx_metadata(path)
        else:
            with zipfile.ZipFile(keras_file(path)) as archive:
                text = archive.read(KERAS_MEMBER) if KERAS_MEMBER in archive.namelist() else None
        return cls() if text is None else cls.from_dict(json.loads(text))

    def write(self, path):
        """Record these facts in the artifact being written at `path` (its writer stages it,
        `pnen_tf._atomic`): a SavedModel folder's asset, an `.onnx` file's metadata property,
        else a `.keras` file's member."""
        if os.path.isdir(path):
            assets = os.path.join(path, "assets")
            os.makedirs(assets, exist_ok=True)
            with open(os.path.join(assets, SAVED_MODEL_ASSET), "w") as file:
                file.write(self.to_json())
        elif str(path).endswith(".onnx"):
            import onnx

            model = onnx.load(path)
            entry = model.metadata_props.add()
            entry.key, entry.value = ONNX_METADATA_KEY, self.to_json()
            onnx.save(model, path)
        else:
            with zipfile.ZipFile(path, "a") as archive:
                archive.writestr(KERAS_MEMBER, self.to_json())

    def completed(self, channels, probe, scale=None, source="the model"):
        """(facts, notes): these facts with `in_channels`, `input` and `scale` filled in from
        the model where they were not recorded, and a note per inferred fact.

        Args:
            channels: the channels of the model's input.
            probe: function from float32 [1, h, w, c] to the model's output; called on a
                `PROBE_SIDE`-pixel zero image only if `input` was not recorded: an output r
                times larger is an 'lr' model of scale r; a same-size one takes 'upsampled'
                images if `scale` > 1 is asked, else images of its output's size.
            scale: the scale the caller asks for (None: any).
            source: how the notes and errors name the model.

        Raises `ValueError` where the recorded facts contradict the model.
        """
        facts, notes = self.to_dict(), []
        if self.in_channels is None:
            facts["in_channels"] = int(channels)
            notes.append(f"{source} records no model facts: in_channels={channels} from its input")
        elif self.in_channels != channels:
            raise ValueError(f"{source}: its facts say in_channels={self.in_channels} but the "
                             f"model takes {channels} channels")
        if self.input is None:
            image = np.zeros((1, PROBE_SIDE, PROBE_SIDE, facts["in_channels"]), np.float32)
            ratio = np.asarray(probe(image)).shape[1] // PROBE_SIDE
            facts["input"] = "lr" if ratio > 1 else ("upsampled" if (scale or 1) > 1 else "same")
            facts.setdefault("scale", ratio if ratio > 1 else (scale or 1))
            notes.append(f"{source}: input convention {facts['input']!r}, scale "
                         f"{facts['scale']} inferred from a probe")
        elif self.input not in INPUT_CONVENTIONS:
            raise ValueError(f"{source}: unknown input convention {self.input!r}")
        facts.setdefault("scale", 1)
        return ModelInfo.from_dict(facts), notes


_FIELDS = tuple(f.name for f in dataclasses.fields(ModelInfo) if f.name != "extra")


def keras_file(path):
    """`path`, or the file of the preset it names, checked to be a `.keras` (zip) file."""
    from pnen_tf.models.presets import resolve

    path = resolve(path)  # FileNotFoundError for a preset this version does not ship
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r} (nor a preset: see `pnen-tf presets`)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras model file (not a zip archive)")
    return path


def _read_text(path):
    with open(path) as file:
        return file.read()


def _onnx_metadata(path):
    import onnx

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX file at {path!r}")
    model = onnx.load(path, load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == ONNX_METADATA_KEY), None)
