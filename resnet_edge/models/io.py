"""Save and load Keras model files together with their ModelMetadata (the Keras runtime's container: a JSON entry
in the ``.keras`` zip, or an HDF5 attribute in ``.h5``)."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_path
from ..errors import InvalidArgumentError, ModelFileError, first_line
from ..metadata import METADATA_KEY, ModelMetadata, check_policy, require_file, tool_versions
from ..registry import KERAS_SUFFIXES
from .resnet import keras, output_activation_of, preprocessing_of

KERAS_ENTRY = f"{METADATA_KEY}.json"


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


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class labels from a text file, one per line (blank lines skipped)."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: cannot read labels ({first_line(exc)})") from exc
    labels = [line for line in lines if line]
    if not labels:
        raise InvalidArgumentError(f"{path}: no labels in it (one per line)")
    return labels


def build_file(name: str, out: str | os.PathLike[str], *, input_size: tuple[int, int] = (224, 224),
               classes: int = 1000, head: str = "paper", preprocessing: str = "scale",
               weights: str | os.PathLike[str] | None = None, labels: str | os.PathLike[str] | None = None,
               resize: str = "squash") -> dict:
    """``resnet-edge build``: a ResNet model file from a name and an input shape, with its metadata."""
    from .resnet import build_resnet

    check_policy(resize)
    label_list = read_labels(labels) if labels else None
    model = build_resnet(name, (*input_size, 3), num_classes=classes, head=head, preprocessing=preprocessing,
                         weights=weights)
    save_model(model, out, describe(model, label_list, resize=resize))
    return {"path": str(out), "model": name, "input_shape": [*input_size, 3],
            "parameters": int(model.count_params()), "resize": resize}


def save_model(model, path: str | os.PathLike[str], metadata: ModelMetadata | None = None) -> Path:
    """Write ``model`` atomically as ``.keras`` (or legacy ``.h5``) with its metadata inside."""
    path = Path(path)
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidArgumentError(f"{path}: a Keras model file must end in .keras or .h5")
    metadata = metadata or describe(model)
    if getattr(model, "optimizer", None) is not None:
        model = _without_training_state(model)
    with atomic_path(path) as tmp:
        model.save(tmp)
        embed_keras(tmp, metadata)
    return path


def _without_training_state(model):
    """A copy without optimizer state: a deployable model file is about a third of the size."""
    clean = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    clean.set_weights(model.get_weights())
    return clean


def load_model(path: str | os.PathLike[str]) -> tuple[object, ModelMetadata]:
    """Load a Keras model file and its metadata (derived from the model when the file has none)."""
    path = Path(path)
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelFileError(f"{path}: not a Keras model file (.keras or .h5)")
    metadata = read_keras(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load Keras model ({type(exc).__name__}: "
                             f"{first_line(str(exc), 200)})") from exc
    return model, metadata or describe(model)


def embed_keras(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Add the metadata to a freshly saved (still temporary) ``.keras`` or ``.h5`` file."""
    path = Path(path)
    if path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(KERAS_ENTRY, metadata.to_json())
    else:
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs[METADATA_KEY] = metadata.to_json()


def write_keras(path: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    """Rewrite a ``.keras``/``.h5`` file with ``metadata`` (other entries copied as they are)."""
    path = Path(path)
    require_file(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
                for item in source.infolist():
                    if item.filename != KERAS_ENTRY:
                        target.writestr(item, source.read(item.filename))
        else:
            shutil.copyfile(path, tmp)
        embed_keras(tmp, metadata)


def read_keras(path: str | os.PathLike[str]) -> ModelMetadata | None:
    path = Path(path)
    require_file(path)
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                if KERAS_ENTRY not in archive.namelist():
                    return None
                return ModelMetadata.from_json(archive.read(KERAS_ENTRY), str(path))
        except zipfile.BadZipFile as exc:
            raise ModelFileError(f"{path}: not a Keras model (corrupt or truncated .keras archive)") from exc
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(METADATA_KEY)
    except OSError as exc:
        raise ModelFileError(f"{path}: not a Keras model (cannot open as HDF5)") from exc
    return None if text is None else ModelMetadata.from_json(text, str(path))
