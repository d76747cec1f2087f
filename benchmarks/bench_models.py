"""What the benchmarks share: the measurement settings, progress lines, and the models they measure (trained on
first use, then reused from ``<out>/models``): the ResNet-50 @224 trained briefly on the photos and the digits
ResNet-18. ``run.py`` (`make bench`) and ``quantizer.py`` both take them from here."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """How long to measure and how many images to calibrate and check with."""

    min_time_s: float
    warmup: int
    calib_count: int
    parity_count: int
    epochs: int
    photo_parity_count: int = 400


FULL = Settings(min_time_s=5.0, warmup=10, calib_count=300, parity_count=500, epochs=5)
QUICK = Settings(min_time_s=0.5, warmup=3, calib_count=30, parity_count=100, epochs=1)


def say(message: str) -> None:
    """Progress on stderr with a timestamp, so stdout stays the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


TRAIN_EPOCHS = 3


def train_on_photos(model, images, labels, epochs: int) -> float:
    """Train the whole network briefly to tell the photos apart (their classes are the first of its 1000 outputs);
    returns the training accuracy. No trained ResNet-50 can be had here, and a random-init one is never confident,
    so top-1 agreement would go untested: a trained model has image-dependent features and confident answers.
    (A random backbone with a fitted head is no substitute: its decisions rest on feature differences below one
    int8 step, which no 8-bit model can keep; measured: int8 top-1 agreement 17 %.)"""
    import keras
    import numpy as np

    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(images.astype(np.float32), labels, epochs=epochs, batch_size=16, shuffle=True, verbose=0)
    return float(history.history["accuracy"][-1])


def photos_resnet50(out: Path, settings: Settings) -> Path:
    """ResNet-50 @224 with a 1000-class softmax head, trained briefly on the calibration photos
    (``<out>/models/resnet50_224_photos.keras``; reused when there, so the bench's parts share one model)."""
    from resnet_edge.data import load_photos
    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import save_model

    model_path = out / "models" / "resnet50_224_photos.keras"
    if model_path.exists():
        return model_path
    import keras

    keras.utils.set_random_seed(0)
    model = build_resnet("resnet50", (224, 224, 3), num_classes=1000)
    photos = load_photos((224, 224))
    seen = photos.subset(photos.sample_indices(settings.calib_count))  # run_all's calibration images, no others
    say(f"training ResNet-50 @224 on {len(seen)} photo crops for {TRAIN_EPOCHS} epochs")
    say(f"training accuracy {train_on_photos(model, seen.images, seen.labels, TRAIN_EPOCHS):.2%}")
    save_model(model, model_path)
    return model_path


def digits_model(out: Path, settings: Settings, quick: bool) -> Path:
    """The trained ResNet-18 on digits @32: reused when present, else trained and saved (not committed)."""
    full = out / "resnet18_digits.keras"
    path = out / "models" / "resnet18_digits_quick.keras" if quick and not full.exists() else full
    if path.exists():
        return path
    from resnet_edge.data import load_digits
    from resnet_edge.models import build_resnet
    from resnet_edge.models.io import describe, save_model
    from resnet_edge.train import train

    data = load_digits((32, 32))
    model = build_resnet("resnet18", (32, 32, 3), num_classes=len(data.class_names))
    say(f"training resnet18 on digits @32 for {settings.epochs} epoch(s)")
    result = train(model, data, epochs=settings.epochs, verbose=0)
    say(f"validation accuracy {result.val_accuracy:.2%} after {result.seconds:.0f} s")
    return save_model(model, path, describe(model, labels=data.class_names))
