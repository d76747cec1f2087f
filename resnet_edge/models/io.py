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
from ..metadata import METADATA_KEY, TASKS, ModelMetadata, OutputInfo, check_policy, require_file, tool_versions
from ..registry import KERAS_SUFFIXES
from .resnet import keras, output_activation_of, preprocessing_of

KERAS_ENTRY = f"{METADATA_KEY}.json"


def output_infos(model) -> tuple[OutputInfo, ...]:
    """The model's outputs in order: name, shape per image, stride of a feature map."""
    names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    height = int(model.input_shape[1])
    infos = []
    for name, tensor in zip(names, model.outputs, strict=True):
        shape = tuple(int(v) for v in tensor.shape[1:])
        stride = height // shape[0] if len(shape) == 3 and shape[0] else None
        infos.append(OutputInfo(str(name), shape, stride))
    return tuple(infos)


CLASSIFIER_OUTPUT = "predictions"  # keras.applications' and build_resnet's classifier head


def infer_task(outputs: Sequence[OutputInfo], activation: str | None, labels: Sequence[str] | None) -> str:
    """What a model is for, from its outputs: labels, a softmax or a head named ``predictions`` (the name Keras
    and ``build_resnet`` give a classifier's Dense, logits too) make a classifier, several or spatial outputs
    features, one other flat output an embedding (say ``task`` when a foreign logits classifier has no labels)."""
    if labels or activation == "softmax":
        return "classifier"
    if len(outputs) != 1 or len(outputs[0].shape) != 1:
        return "features"
    return "classifier" if outputs[0].name == CLASSIFIER_OUTPUT else "embedding"


def describe(model, labels: Sequence[str] | None = None, resize: str = "squash",
             task: str | None = None) -> ModelMetadata:
    """Metadata derived from the model itself: its task (given, or from its outputs), outputs and labels (a
    classifier's default to the class indices)."""
    input_shape = tuple(int(v) for v in model.input_shape[1:])
    outputs = output_infos(model)
    activation = output_activation_of(model)
    if task is not None and task not in TASKS:
        raise InvalidArgumentError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    task = task or infer_task(outputs, activation, labels)
    flat = len(outputs) == 1 and len(outputs[0].shape) == 1
    if task in ("classifier", "embedding") and not flat:
        raise InvalidArgumentError(f"a {task} has one flat output; {model.name} outputs "
                                   f"{', '.join(f'{o.name} {list(o.shape)}' for o in outputs)}")
    if task == "classifier":
        classes = outputs[0].shape[0]
        labels = [str(i) for i in range(classes)] if labels is None else list(labels)
        if len(labels) != classes:
            raise InvalidArgumentError(f"{len(labels)} labels given for a model with {classes} classes")
    elif labels:
        raise InvalidArgumentError(f"labels belong to a classifier; {model.name} is a {task} model")
    normalized = task == "embedding" and type(model.layers[-1]).__name__ == "UnitNormalization"
    return ModelMetadata(
        model=model.name,
        input_shape=input_shape,  # type: ignore[arg-type]
        labels=tuple(str(label) for label in labels or ()),
        preprocessing=preprocessing_of(model),
        output_activation=activation if task == "classifier" else None,
        resize=check_policy(resize),
        tools=tool_versions("resnet-edge", "tensorflow", "keras"),
        task=task,
        outputs=outputs,
        normalized=normalized,
    )


def with_task(model, metadata: ModelMetadata, task: str | None = None) -> ModelMetadata:
    """``metadata`` with the task, outputs and normalisation the model has (for model files written before they
    were recorded), or with ``task`` as the user says; labels and resize policy kept."""
    if metadata.outputs and (task is None or task == metadata.task):
        return metadata
    keep = metadata.labels if (task or metadata.kind) == "classifier" else None
    derived = describe(model, keep or None, metadata.resize, task or (metadata.task if metadata.outputs else None))
    return metadata.replace(task=derived.task, outputs=derived.outputs, normalized=derived.normalized,
                            labels=derived.labels, output_activation=derived.output_activation
                            if derived.task == "classifier" else None)


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
               resize: str = "squash", features: Sequence[str] | None = None, pooling: str | None = None,
               normalize: bool = False) -> dict:
    """``resnet-edge build``: a ResNet model file from a name and an input shape, with its metadata.

    A classifier by default; ``features`` (``c2``-``c5``, in the order given) makes a multi-output backbone,
    ``pooling`` (``avg``/``max``) an embedding model (the pooled c5 vector, L2-normalised with ``normalize``).
    ``weights`` may be a trained classifier's ``.keras`` file: its layers' weights go to the backbone's.
    """
    from .resnet import build_resnet

    check_policy(resize)
    headless = features is not None or pooling is not None
    if headless and labels:
        raise InvalidArgumentError("--labels name a classifier's classes; a backbone or an embedding has none")
    label_list = read_labels(labels) if labels else None
    if label_list is not None and not headless:
        classes = len(label_list) if classes is None else classes
    model = build_resnet(name, (*input_size, 3), num_classes=classes, head=head, preprocessing=preprocessing,
                         include_top=not headless, features=tuple(features) if features else None, pooling=pooling,
                         normalize=normalize, weights=weights)
    metadata = describe(model, label_list, resize=resize)
    save_model(model, out, metadata)
    return {"path": str(out), "model": name, "task": metadata.task, "input_shape": [*input_size, 3],
            "outputs": [{"name": o.name, "shape": list(o.shape), "stride": o.stride} for o in metadata.outputs],
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
