"""Training: the paper's protocol on a cache, from balanced batches to the best checkpoint.

``sampling`` draws the balanced 4+4-per-AU batches and computes the per-AU masked BCE, ``transforms`` holds the
input normalizations and the kornia augmentation groups, ``trainer`` runs the epochs, validation, checkpoints and
DDP. May use ``data``, ``models`` and the bottom layer; never ``evaluation`` or ``studies``.
"""
