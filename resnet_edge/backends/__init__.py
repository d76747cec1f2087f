"""One folder per runtime. Each ``backends/<name>/__init__.py`` declares ``RUNTIME`` (rows only, no imports of the
runtime itself); the registry reads them in the order of ``registry.RUNTIMES``. Runtimes never import each other:
what several share (the ONNX route) lives in ``resnet_edge.interchange``."""
