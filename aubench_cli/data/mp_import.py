"""``import mediapipe`` without the matplotlib it does not need here.

mediapipe 0.10.21's ``solutions`` package imports ``drawing_utils``, which imports ``matplotlib.pyplot`` for one
plotting helper (``plot_landmarks``) that aubench never calls: 0.3 s of the 0.64 s that importing mediapipe costs,
paid by every preprocess and predict run before its first frame (the forkserver imports mediapipe once; its
start-up is on the critical path: docs/performance.md, "preprocess"). So ``mediapipe`` is imported here with
stand-ins for ``matplotlib`` and ``matplotlib.pyplot`` in ``sys.modules`` (only those not imported already), and the
stand-ins are removed right after: ``drawing_utils`` keeps an empty ``plt``, and any later ``import matplotlib`` in
the process (predict's plots, reports) is the real one.
"""

from __future__ import annotations

import sys
import types


def _load():
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    stand_ins = {name: types.ModuleType(name) for name in ("matplotlib", "matplotlib.pyplot") if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import mediapipe
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return mediapipe


mediapipe = _load()
