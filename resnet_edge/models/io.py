"""Save and load Keras models together with their ModelMetadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .. import artifact
from ..atomic import atomic_path
from ..errors import InvalidArgumentError, ModelFileError, first_line
from ..metadata import ModelMetadata, check_policy, tool_versions
from .resnet import keras, output_activation_of, preprocessing_of

KERAS_SUFFIXES = (".keras", ".h5")


def describe(model, labels: Sequence[str] | None = None, resize: str = "squash") -> ModelMetadata:
    """Metadata derived from the model itself; ``labels`` default to the class indices."""
    input_shape = tuple(int(v) for v in model.input_shape[1:])
    output_shape = model.output_shape
    classes = output_shape[-1] if isinstance(output_shape, tuple) and len(output_shape) == 2 else 0
    if labels is None:
        labels = [str(i) for i in range(classes or 0)]
    elif classes and len(labels) != classes:
        raise InvalidArgumentError(f"{len(labels)} labels given for a model with {classes} classes")
    return ModelMetadata(
        model=model.name,
        input_shape=input_shape,  # type: ignore[arg-type]
        labels=tuple(str(label) for label in labels),
        preprocessing=preprocessing_of(model),
        output_activation=output_activation_of(model),
        resize=check_policy(resize),
        tools=tool_versions("resnet-edge", "tensorflow", "keras"),
    )


def save_model(model, path: str | os.PathLike[str], metadata: ModelMetadata | None = None) -> Path:
    """Write ``model`` atomically as ``.keras`` (or legacy ``.h5``) with its metadata inside."""
    path = Path(path)
    if path.suffix not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{path}: a Keras model file must end in .keras or .h5")
    metadata = metadata or describe(model)
    if getattr(model, "optimizer", None) is not None:
        model = _without_training_state(model)
    with atomic_path(path) as tmp:
        model.save(tmp)
        artifact.embed_keras(tmp, metadata)
    return path


def _without_training_state(model):
    """A copy without optimizer state: a deployable model file is about a third of the size."""
    clean = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    clean.set_weights(model.get_weights())
    return clean


def load_model(path: str | os.PathLike[str]) -> tuple[object, ModelMetadata]:
    """Load a Keras model file and its metadata (derived from the model when the file has none)."""
    path = Path(path)
    if path.suffix not in KERAS_SUFFIXES:
        raise ModelFileError(f"{path}: not a Keras model file (.keras or .h5)")
    metadata = artifact.read_keras(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load Keras model ({type(exc).__name__}: "
                             f"{first_line(str(exc), 200)})") from exc
    return model, metadata or describe(model)
