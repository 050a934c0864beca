"""Signals domain (issue 13): ``features`` (the per-instrument feature state, the signals,
depth, features and returns kernels, parameter and model files) and ``routing`` (registry
models in the kernel: champion/challenger routing and the shadow scorer). Below
``bot4.stages``: nothing here imports a stage or the pipeline."""
