"""Train or fine-tune a ResNet on a Dataset, reporting validation accuracy."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._lazy import import_keras
from .data import Dataset
from .errors import DataError, InvalidArgumentError

keras = import_keras()


class _Batches(keras.utils.PyDataset):
    """Shuffled float batches of a Dataset, with optional horizontal flips."""

    def __init__(self, dataset: Dataset, batch_size: int, flip: bool, seed: int) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.flip = dataset, batch_size, flip
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(dataset))

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.dataset.images[chosen].astype(np.float32)
        if self.flip:
            flips = self.rng.random(len(chosen)) < 0.5
            images[flips] = images[flips, :, ::-1]
        return images, self.dataset.labels[chosen]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.dataset))


@dataclass
class TrainResult:
    val_accuracy: float
    train_accuracy: float
    epochs: int
    seconds: float
    train_images: int
    val_images: int
    history: dict[str, list[float]] = field(default_factory=dict)


def freeze_backbone(model) -> None:
    """Train only the classifier head (layers after global pooling) when fine-tuning."""
    trainable = False
    for layer in model.layers:
        if layer.name in ("avg_pool", "max_pool"):
            trainable = True
        layer.trainable = trainable


def train(
    model,
    dataset: Dataset,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.2,
    flip: bool = False,
    seed: int = 0,
    verbose: int = 1,
    resize: str = "squash",
) -> TrainResult:
    """Fit ``model`` on a stratified split of ``dataset`` (Adam, cosine-decayed learning rate).

    Images of another size are fitted under ``resize``, the policy to record in the saved model.
    """
    dataset.check_trainable()
    if epochs < 1 or batch_size < 1:
        raise InvalidArgumentError("epochs and batch size must be at least 1")
    classes = model.output_shape[-1]
    if len(dataset.class_names) != classes:
        raise DataError(f"{dataset.source} has {len(dataset.class_names)} classes but the model outputs {classes}")
    expected = tuple(model.input_shape[1:3])
    if dataset.image_size != expected:
        dataset = dataset.resized(expected, resize)
    keras.utils.set_random_seed(seed)
    train_set, val_set = dataset.split(val_fraction, seed)
    batches = _Batches(train_set, batch_size, flip, seed)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * len(batches))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(
        batches,
        validation_data=(val_set.images.astype(np.float32), val_set.labels),
        epochs=epochs,
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    values = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return TrainResult(
        val_accuracy=values["val_accuracy"][-1],
        train_accuracy=values["accuracy"][-1],
        epochs=epochs,
        seconds=seconds,
        train_images=len(train_set),
        val_images=len(val_set),
        history=values,
    )


def train_file(model: str, data: str, out: str | os.PathLike[str], *, input_size: tuple[int, int] = (32, 32),
               epochs: int = 5, batch_size: int = 32, learning_rate: float = 1e-3, val_split: float = 0.2,
               head: str = "paper", weights: str | os.PathLike[str] | None = None, freeze: bool = False,
               flip: bool = False, resize: str | None = None, seed: int = 0, verbose: int = 1,
               progress: Callable[[str], None] | None = None) -> dict:
    """``resnet-edge train``: a new ResNet (by name) or a model file, trained on ``data``, written atomically.

    ``resize`` defaults to the model file's own policy, else squash; the class names become the labels.
    """
    from .data import load_dataset
    from .metadata import check_policy
    from .models import build_resnet
    from .models.io import describe, load_model, save_model
    from .models.resnet import load_weights
    from .registry import KERAS_SUFFIXES

    policy = check_policy(resize) if resize is not None else None
    if Path(model).suffix.lower() in KERAS_SUFFIXES:
        keras_model, metadata = load_model(model)
        size = tuple(int(v) for v in keras_model.input_shape[1:3])
        policy = policy or metadata.resize
    else:
        size, keras_model = tuple(input_size), None
    policy = policy or "squash"
    dataset = load_dataset(data, size, policy)
    dataset.check_trainable()
    if keras_model is None:
        keras_model = build_resnet(model, (*size, 3), num_classes=len(dataset.class_names), head=head)
    if weights is not None:
        load_weights(keras_model, weights, skip_mismatch=True)
    if freeze:
        freeze_backbone(keras_model)
    if progress is not None:
        progress(f"training {keras_model.name} on {dataset.source}: {len(dataset)} images, "
                 f"{len(dataset.class_names)} classes, {size[0]}x{size[1]} ({policy})")
    result = train(keras_model, dataset, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   val_fraction=val_split, flip=flip, seed=seed, verbose=verbose, resize=policy)
    save_model(keras_model, out, describe(keras_model, dataset.class_names, resize=policy))
    return {"path": str(out), "model": keras_model.name, "val_accuracy": result.val_accuracy,
            "train_accuracy": result.train_accuracy, "epochs": result.epochs, "resize": policy,
            "seconds": round(result.seconds, 1), "train_images": result.train_images, "val_images": result.val_images}
