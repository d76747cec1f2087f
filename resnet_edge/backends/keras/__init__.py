"""Keras (TensorFlow): the float reference every artifact is checked against. Its model files are read and written
by ``resnet_edge.models.io`` (which training and export use too), so the container row points there."""

from ...registry import KERAS_SUFFIXES, BackendEntry, Container, Runtime

HERE = __name__

RUNTIME = Runtime(
    BackendEntry(
        "keras", f"{HERE}.backend:KerasBackend", KERAS_SUFFIXES,
        Container("resnet_edge.models.io:read_keras", "resnet_edge.models.io:write_keras"),
        ("cuda", "cpu"), "export",
        probe=f"{HERE}.probe:probe",  # what this machine really gives it (resnet-edge doctor)
        device_help={"cpu": "the host CPU", "cuda": "an NVIDIA GPU through CUDA"},
        description="the float reference (TensorFlow)", tools=("tensorflow", "keras"),
    ),
)
