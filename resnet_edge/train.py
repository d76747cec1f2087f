"""Train or fine-tune a ResNet on a Dataset, reporting validation accuracy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
