"""Beyond one machine on Ray: batch scoring and parity with Ray Data, online serving with Ray Serve.

Ray is an optional dependency (``pip install 'resnet-edge[scale]'``); nothing outside this package
imports it, so the base install and ``predict`` never load it.
"""
