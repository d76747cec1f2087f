"""The float model as a reference: digests that key the caches of conversions and outputs, and the model
cut to match an artifact that outputs logits."""

from __future__ import annotations

import hashlib
import json

from .._memo import PerModel
from .resnet import logits_model, output_activation_of


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def model_digest(model) -> str:
    """Architecture and weights: a kept conversion or reference output is reused only for the very same model."""
    config = json.dumps(model.get_config(), sort_keys=True, default=str).encode()
    return hashlib.sha256(config + weights_digest(model).encode()).hexdigest()


_logits_models = PerModel()  # a Keras model cut before its softmax, kept while the model lives


def matching_reference(model, activation: str | None):
    """The Keras model whose outputs are like an artifact's: cut before its softmax when the artifact gives logits."""
    if activation != "linear" or output_activation_of(model) != "softmax":
        return model
    return _logits_models.get(model, model_digest(model), lambda: logits_model(model))
