"""Evaluation: a trained run tested on balanced batches of a cache, and runs compared with each other.

``evaluate`` draws the test batches, computes the paper's accuracy and the field's metrics and pairs runs. May use
``training`` (checkpoints, samplers, normalization), ``data``, ``models`` and the bottom layer; never ``studies``.
"""
