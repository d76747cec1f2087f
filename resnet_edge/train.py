"""Train or fine-tune a ResNet on a Dataset, keeping the weights of its best validation epoch.

One rule for every run: after each epoch the model is scored on a stratified validation split; the weights of
the best epoch (highest validation accuracy, ties to the lower validation loss) are kept in memory and restored
at the end, so a run whose last epochs get worse still writes its best model. ``patience`` stops a run that has
not improved for that many epochs; the learning rate follows a schedule (cosine by default). Fine-tuning can train
the head alone for the first epochs and then the whole network (``unfreeze_at``).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import import_keras
from .data import Dataset
from .errors import DataError, InvalidArgumentError

keras = import_keras()

SCHEDULES = ("cosine", "step", "constant")
FINE_TUNE_LR_FACTOR = 0.1  # the whole network fine-tunes at a tenth of the head's learning rate
CHANCE_MARGIN = 0.05  # within 5 points of guessing (or two standard deviations of it) is "near chance"
HEAD_LAYERS = ("avg_pool", "max_pool")  # the global pooling that starts a classifier head

Progress = Callable[[str], None]


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
    """What a run did. ``val_accuracy`` and ``train_accuracy`` are those of the weights kept (the best epoch's);
    ``final_val_accuracy`` is the last epoch's. Epochs count from 1."""

    val_accuracy: float
    train_accuracy: float
    epochs: int  # epochs run
    seconds: float
    train_images: int
    val_images: int
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    final_val_accuracy: float = 0.0
    epochs_planned: int = 0
    stopped_early: bool = False
    unfrozen_at: int | None = None  # the first epoch that trained the whole network
    chance: float = 0.0  # what always answering the commonest validation class scores
    near_chance: bool = False


def chance_level(labels: np.ndarray, classes: int) -> float:
    """The accuracy of guessing: always answering the commonest class (1/classes on a balanced split)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    return float(counts.max() / counts.sum()) if counts.sum() else 1.0 / classes


def near_chance(accuracy: float, chance: float, count: int) -> bool:
    """True when ``accuracy`` on ``count`` validation images is no better than guessing: at most ``chance`` plus
    the larger of ``CHANCE_MARGIN`` (5 points) and two standard deviations of what guessing scores on that many
    images (32 images at 4 classes: up to 40.3 %), but never more than halfway from chance to 100 %."""
    spread = 2.0 * math.sqrt(chance * (1.0 - chance) / max(count, 1))
    return accuracy <= chance + min(max(CHANCE_MARGIN, spread), (1.0 - chance) / 2)


def freeze_backbone(model) -> None:
    """Train only the classifier head (the layers from global pooling on) when fine-tuning.

    A frozen BatchNormalization layer runs in inference mode (its moving statistics stay as they are)."""
    names = [layer.name for layer in model.layers]
    if not any(name in HEAD_LAYERS for name in names):
        raise InvalidArgumentError(f"--freeze-backbone: {model.name} has no global pooling layer "
                                   f"({' or '.join(HEAD_LAYERS)}) where its head starts")
    trainable = False
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            trainable = True
        layer.trainable = trainable


def unfreeze_backbone(model) -> None:
    """Make every layer trainable but BatchNormalization, which stays frozen and so in inference mode (Keras'
    transfer-learning guide: updating its statistics on a small data set would undo the pretrained ones)."""
    for layer in model.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def _schedule(name: str, learning_rate: float, steps: int):
    """``cosine`` decays to zero over ``steps``; ``step`` divides by 10 at half and at three quarters of them."""
    steps = max(int(steps), 1)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    if name == "step":
        bounds = sorted({max(1, steps // 2), max(2, steps * 3 // 4)})
        values = [learning_rate * 0.1**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    return learning_rate


class _KeepBest(keras.callbacks.Callback):
    """After each epoch: note the best weights, write one plain line (no progress-bar escape codes), and stop a
    phase that has gone ``patience`` epochs without a better epoch."""

    def __init__(self, planned: int, patience: int | None, say: Progress | None) -> None:
        super().__init__()
        self.planned, self.patience, self.say = planned, patience, say
        self.best: tuple[float, float] | None = None  # (val_accuracy, -val_loss)
        self.best_epoch, self.best_logs, self.saved = -1, {}, []
        self.history: dict[str, list[float]] = {}
        self.since_best, self.last_epoch, self.stopped, self.started = 0, -1, False, 0.0

    def start_phase(self) -> None:
        self.since_best, self.stopped = 0, False

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.last_epoch = epoch
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        score = (logs.get("val_accuracy", 0.0), -logs.get("val_loss", math.inf))
        better = self.best is None or score > self.best
        if better:
            self.best, self.best_epoch, self.best_logs, self.since_best = score, epoch, logs, 0
            self.saved = [(variable, np.array(variable.numpy(), copy=True)) for variable in self.model.weights]
        else:
            self.since_best += 1
        if self.say is not None:
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.say(f"epoch {epoch + 1}/{self.planned}: loss {logs.get('loss', math.nan):.4f}, accuracy "
                     f"{logs.get('accuracy', math.nan):.1%}; validation loss {logs.get('val_loss', math.nan):.4f}, "
                     f"accuracy {logs.get('val_accuracy', math.nan):.1%}; learning rate {rate:.2g}; "
                     f"{time.perf_counter() - self.started:.0f} s" + (" (best so far)" if better else ""))
        if self.patience is not None and self.since_best >= self.patience:
            self.stopped = self.model.stop_training = True

    def restore(self) -> None:
        for variable, value in self.saved:
            variable.assign(value)


def check_options(*, epochs: int, batch_size: int, schedule: str, patience: int | None, freeze: bool,
                  unfreeze_at: int | None) -> None:
    """Refuse, in one line and before any data is read, options that cannot go together."""
    if epochs < 1 or batch_size < 1:
        raise InvalidArgumentError("epochs and batch size must be at least 1")
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    if patience is not None and patience < 1:
        raise InvalidArgumentError("--patience must be at least 1 epoch")
    if unfreeze_at is not None and not freeze:
        raise InvalidArgumentError("--unfreeze-at needs --freeze-backbone (the head trains alone until then)")
    if unfreeze_at is not None and unfreeze_at < 1:
        raise InvalidArgumentError("--unfreeze-at must be at least 1 (the epochs that train the head alone)")


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
    schedule: str = "cosine",
    patience: int | None = None,
    freeze: bool = False,
    unfreeze_at: int | None = None,
    progress: Progress | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fit ``model`` on a stratified split of ``dataset`` (Adam) and leave it with its best epoch's weights.

    ``schedule``: ``cosine`` (default), ``step`` or ``constant`` learning rate over the planned epochs.
    ``patience``: stop after that many epochs without a better validation epoch (None: run them all).
    ``freeze``: train the head only; with ``unfreeze_at=N`` the first N epochs train the head, then the whole
    network (BatchNormalization kept in inference mode) at ``FINE_TUNE_LR_FACTOR`` times the learning rate, on a
    fresh schedule over the remaining epochs; a head phase that runs out of patience unfreezes at once.
    ``verbose``: on a terminal Keras' progress bar, otherwise one plain line per epoch to ``progress`` (or
    stdout). Warns when the kept model is near chance (``near_chance``). Images of another size are fitted
    under ``resize``, the policy to record in the saved model. ``callbacks``: more Keras callbacks.
    """
    dataset.check_trainable()
    check_options(epochs=epochs, batch_size=batch_size, schedule=schedule, patience=patience, freeze=freeze,
                  unfreeze_at=unfreeze_at)
    if unfreeze_at is not None and unfreeze_at >= epochs:
        warnings.warn(f"--unfreeze-at {unfreeze_at} is not before the last of {epochs} epochs: "
                      "the backbone stays frozen", stacklevel=2)
        unfreeze_at = None
    classes = model.output_shape[-1]
    if len(dataset.class_names) != classes:
        raise DataError(f"{dataset.source} has {len(dataset.class_names)} classes but the model outputs {classes}")
    expected = tuple(model.input_shape[1:3])
    if dataset.image_size != expected:
        dataset = dataset.resized(expected, resize)
    keras.utils.set_random_seed(seed)
    train_set, val_set = dataset.split(val_fraction, seed)
    batches = _Batches(train_set, batch_size, flip, seed)
    validation = (val_set.images.astype(np.float32), val_set.labels)
    note = None if verbose <= 0 else progress or print
    bar = note is not None and sys.stdout.isatty()  # Keras' bar redraws a terminal line; in a log, plain lines
    watch = _KeepBest(epochs, patience, None if bar else note)
    if freeze:
        freeze_backbone(model)
    phases = [(unfreeze_at or epochs, learning_rate)]  # (the epoch it ends before, its learning rate)
    if unfreeze_at is not None:
        phases.append((epochs, learning_rate * FINE_TUNE_LR_FACTOR))
    started = time.perf_counter()
    first, unfrozen_at = 0, None
    for index, (end, rate) in enumerate(phases):
        if index == 1:
            unfreeze_backbone(model)
            unfrozen_at = first + 1
            if note is not None:
                note(f"epoch {first + 1}: training the whole network (BatchNormalization frozen), learning rate "
                     f"{rate:.2g}")
        model.compile(optimizer=keras.optimizers.Adam(_schedule(schedule, rate, (end - first) * len(batches))),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        watch.start_phase()
        model.fit(batches, validation_data=validation, initial_epoch=first, epochs=end, verbose=1 if bar else 0,
                  callbacks=[watch, *callbacks])
        first = watch.last_epoch + 1
    seconds = time.perf_counter() - started
    watch.restore()
    best = watch.best_logs
    chance = chance_level(val_set.labels, classes)
    result = TrainResult(
        val_accuracy=best["val_accuracy"], train_accuracy=best.get("accuracy", math.nan), epochs=first,
        seconds=seconds, train_images=len(train_set), val_images=len(val_set), history=watch.history,
        best_epoch=watch.best_epoch + 1, final_val_accuracy=watch.history["val_accuracy"][-1],
        epochs_planned=epochs, stopped_early=first < epochs, unfrozen_at=unfrozen_at, chance=chance,
        near_chance=near_chance(best["val_accuracy"], chance, len(val_set)),
    )
    if result.near_chance:
        warnings.warn(f"validation accuracy {result.val_accuracy:.1%} (the best, epoch {result.best_epoch}) is no "
                      f"better than chance ({chance:.1%} on {len(val_set)} images): the model has not learned these "
                      "classes; try more epochs, a lower --lr or more images", stacklevel=2)
    return result


def train_file(model: str, data: str, out: str | os.PathLike[str], *, input_size: tuple[int, int] = (32, 32),
               epochs: int = 5, batch_size: int = 32, learning_rate: float = 1e-3, val_split: float = 0.2,
               head: str = "paper", weights: str | os.PathLike[str] | None = None, freeze: bool = False,
               flip: bool = False, resize: str | None = None, seed: int = 0, verbose: int = 1,
               schedule: str = "cosine", patience: int | None = None, unfreeze_at: int | None = None,
               progress: Progress | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """``resnet-edge train``: a new ResNet (by name) or a model file, trained on ``data``; the best validation
    epoch's weights are written atomically.

    ``resize`` defaults to the model file's own policy, else squash; the class names become the labels.
    """
    from .data import load_dataset
    from .metadata import check_policy
    from .models import build_resnet
    from .models.io import describe, load_model, save_model
    from .models.resnet import load_weights
    from .registry import KERAS_SUFFIXES

    policy = check_policy(resize) if resize is not None else None
    check_options(epochs=epochs, batch_size=batch_size, schedule=schedule, patience=patience, freeze=freeze,
                  unfreeze_at=unfreeze_at)
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
    if progress is not None:
        progress(f"training {keras_model.name} on {dataset.source}: {len(dataset)} images, "
                 f"{len(dataset.class_names)} classes, {size[0]}x{size[1]} ({policy})")
    result = train(keras_model, dataset, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   val_fraction=val_split, flip=flip, seed=seed, verbose=verbose, resize=policy, schedule=schedule,
                   patience=patience, freeze=freeze, unfreeze_at=unfreeze_at, progress=progress,
                   callbacks=callbacks)
    save_model(keras_model, out, describe(keras_model, dataset.class_names, resize=policy))
    return {"path": str(out), "model": keras_model.name, "val_accuracy": result.val_accuracy,
            "best_epoch": result.best_epoch, "best_val_accuracy": result.val_accuracy,
            "final_val_accuracy": result.final_val_accuracy, "train_accuracy": result.train_accuracy,
            "epochs": result.epochs_planned, "epochs_run": result.epochs, "stopped_early": result.stopped_early,
            "unfrozen_at": result.unfrozen_at, "schedule": schedule, "patience": patience,
            "chance": result.chance, "near_chance": result.near_chance, "resize": policy,
            "seconds": round(result.seconds, 1), "train_images": result.train_images, "val_images": result.val_images}
