"""Data: from the videos and label files users bring to the aligned-crop cache every later stage reads.

``labels`` reads the four label layouts, ``align`` finds the face and its 4 landmarks and warps the 96x96 crop,
``preprocess`` runs them over a dataset in worker processes, ``cache`` writes and opens the cache, and ``synth``
renders the embedded synthetic dataset. May use the bottom layer (``config``, ``errors``, ``device``, ``fileio``)
and nothing else of aubench: never ``models``, ``training``, ``evaluation`` or ``studies``.
"""
