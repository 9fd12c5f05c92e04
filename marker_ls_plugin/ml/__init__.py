"""Label Studio's ML backend protocol, answered by the plugin.

- ``predictor.py``: the predictor (engine, options, model_version), the one model-choice type; no Django.
- ``protocol.py``: request checks, ``/predict`` (whole pages and the region just drawn), routing; no Django.
- ``address.py``: the in-process backend's URL, which domain code names when it connects a project.
- ``connector.py``: the in-process backend Label Studio's own connector gets, and its seams (MLApi, Start Training).
- ``views.py``: the protocol over HTTP under ``/marker-ls/ml/``, with per-project credentials.
- ``standalone.py``: the protocol as its own service (``marker-ls ml-backend``), reading images over HTTP.
"""
