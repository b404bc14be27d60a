"""Evaluation: a trained run tested on balanced batches of a cache, and runs compared with each other.

``evaluate`` draws the test batches, computes the paper's accuracy, the balanced accuracy and the field's metrics
and pairs runs; ``stats`` holds the statistics (intervals over subjects, paired permutation tests, Holm, the one
best/second ranking). May use ``training`` (checkpoints, normalization), ``data``, ``models`` and the bottom
layer; never ``studies``.
"""
