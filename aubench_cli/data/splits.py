"""Subject-exclusive splits that stay put, and the record that keeps a run's test subjects honest.

``split_subjects`` places each subject by a hash of (seed, proportions, its own name) mapped to [0, 1) and cut at
the proportions: adding or removing subjects never moves another, and the same names, seed and shares give the
same split on any machine. ``split_report`` states the realised sizes and warns (with the fix) when a split is
too small or far from its share, which on small datasets happens. ``subject_roles`` is what ``train`` records in
its run directory; ``check_held_out`` is what ``evaluate`` asks before testing: no subject it would test may have
been in the run's training or validation. A subject is known by its name and its dataset: two subjects with one
name are the same person only when they share a source video (by the content hash of its file, which a copy or a
re-preprocessing keeps), so ``s01`` of one dataset never blocks ``s01`` of another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aubench_cli.errors import UsageError

SPLITS = ("train", "val", "test")
ROLES_FILE = "data.json"  # the run directory's data record, where ``train`` writes ``subject_roles``
SPLIT_FIX = ("choose another --split-seed, give the splits in the manifest's split column, "
             "or evaluate with k-fold cross-validation over subjects")


def subject_position(name: str, proportions: tuple[float, float, float], seed: int) -> float:
    """A subject's place in [0, 1): blake2b of (seed, proportions, name), its first 8 bytes over 2**64."""
    shares = ",".join(f"{float(p):.6f}" for p in proportions)
    digest = hashlib.blake2b(f"{int(seed)}|{shares}|{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_subjects(subjects: list[str], proportions=(0.74, 0.11, 0.15), seed: int = 0) -> dict[str, str]:
    """Subject -> train / val / test, each from its own hash position cut at the (normalised) proportions."""
    total = float(sum(proportions))
    train_cut = proportions[0] / total
    val_cut = train_cut + proportions[1] / total
    out = {}
    for name in sorted(set(subjects)):
        u = subject_position(name, proportions, seed)
        out[name] = "train" if u < train_cut else "val" if u < val_cut else "test"
    return out


def split_report(subjects: dict[str, str], proportions, source: str) -> tuple[dict[str, Any], list[str]]:
    """Realised subjects per split and their shares, and warnings with the fix: a split whose share is above 0
    but that holds fewer than 2 subjects, or whose realised share is off its proportion by more than a third."""
    n = len(subjects)
    total = float(sum(proportions))
    sizes = {s: sum(1 for v in subjects.values() if v == s) for s in SPLITS}
    realised = {s: {"subjects": sizes[s], "share": round(sizes[s] / n, 4) if n else 0.0,
                    "wanted": round(p / total, 4)} for s, p in zip(SPLITS, proportions)}
    warnings = []
    if source == "seed":
        for s, p in zip(SPLITS, proportions):
            want = p / total
            if want <= 0:
                continue
            if sizes[s] < 2:
                warnings.append(f"the {s} split has {sizes[s]} subject{'s' if sizes[s] != 1 else ''} "
                                f"(of {n}; wanted {want:.0%}): {SPLIT_FIX}")
            elif abs(sizes[s] / n - want) > want / 3:
                warnings.append(f"the {s} split holds {sizes[s] / n:.0%} of the {n} subjects, far from its {want:.0%}: "
                                f"{SPLIT_FIX}")
    return realised, warnings


# -- the run's record, and the check before testing -------------------------------------------------------------


def _video_keys(cache: Any) -> list[str]:
    """A key per cached video naming its source: the content hash of its input video when the cache recorded
    it, else the video id (a cache written without fingerprints)."""
    from aubench_cli.data.cache import live_entries

    inputs = {vid: (e.get("input") or {}) for vid, e in live_entries(cache.path).items()}
    keys = []
    for vid in cache.videos:
        digest = (inputs.get(vid, {}).get("video") or {}).get("hash")
        keys.append(f"sha:{digest}" if digest else f"id:{vid}")
    return keys


def subject_roles(cache: Any, train_index: Any, val_index: Any) -> dict[str, Any]:
    """The run's own subject -> role map (train / val for the frames it used, test for the cache's test split),
    with the source keys of each training and validation subject's videos, for ``check_held_out``."""
    import numpy as np

    roles: dict[str, str] = {}
    for role, index in (("train", train_index), ("val", val_index), ("test", cache.indices("test"))):
        for code in np.unique(cache.subject_index[np.asarray(index, dtype=np.int64)]):
            roles.setdefault(cache.subjects[int(code)], role)
    keys = _video_keys(cache)
    sources: dict[str, list[str]] = {}
    for vid, subject, key in zip(cache.videos, cache.video_subject, keys):
        if roles.get(subject) in ("train", "val"):
            sources.setdefault(subject, []).append(key)
    return {"subjects": dict(sorted(roles.items())), "sources": {s: sorted(v) for s, v in sorted(sources.items())}}


def check_held_out(run_dir: str | Path, cache: Any, split: str, index: Any) -> None:
    """Refuse (UsageError naming them) when a subject of the frames to test was in the run's training or
    validation; a run without the record (made before it existed) is not checked."""
    import numpy as np

    try:
        record = json.loads((Path(run_dir) / ROLES_FILE).read_text()).get("subject_roles")
    except (OSError, json.JSONDecodeError, AttributeError):
        record = None
    if not record:
        return
    roles, sources = record.get("subjects", {}), record.get("sources", {})
    keys = _video_keys(cache)
    tested = set(np.unique(cache.video_index[np.asarray(index, dtype=np.int64)]).tolist())
    seen: dict[str, str] = {}
    for v in sorted(tested):
        subject = cache.video_subject[v]
        if roles.get(subject) in ("train", "val") and keys[v] in set(sources.get(subject, [])):
            seen[subject] = roles[subject]
    if seen:
        names = ", ".join(f"{s} ({r})" for s, r in sorted(seen.items())[:10])
        more = f" and {len(seen) - 10} more" if len(seen) > 10 else ""
        raise UsageError(
            f"the {split} split of {cache.path} holds {len(seen)} subject{'s' if len(seen) > 1 else ''} that run "
            f"{Path(run_dir).name} trained or validated on: {names}{more}",
            "evaluate on a cache whose test subjects the run never saw (the cache it was trained on, or one split "
            "with the same --split-seed and --splits)",
        )


def seed_with_every_split(subjects: list[str], proportions=(0.74, 0.11, 0.15), start: int = 0) -> int:
    """The first seed from ``start`` whose split gives every split with a share above 0 at least one subject
    (what a tiny demo set needs to train and test at all); ``start`` itself when none in 1000 does."""
    wanted = {s for s, p in zip(SPLITS, proportions) if p > 0}
    for seed in range(start, start + 1000):
        if wanted <= set(split_subjects(subjects, proportions, seed).values()):
            return seed
    return start


def seed_closest_to_shares(subjects: list[str], proportions=(0.74, 0.11, 0.15), start: int = 0,
                           tries: int = 200) -> int:
    """Of the seeds ``start .. start + tries - 1``, the first whose realised subject counts are closest to the
    proportions (L1 distance to ``share x subjects``) with every split that has a share above 0 non-empty: what a
    tiny set such as the demo's needs (10 subjects: 7 / 1 / 2, not a test split of one subject)."""
    wanted = {s for s, p in zip(SPLITS, proportions) if p > 0}
    target = [p * len(subjects) for p in proportions]
    best, best_seed = None, start
    for seed in range(start, start + tries):
        got = list(split_subjects(subjects, proportions, seed).values())
        if not wanted <= set(got):
            continue
        distance = sum(abs(got.count(s) - t) for s, t in zip(SPLITS, target))
        if best is None or distance < best - 1e-9:
            best, best_seed = distance, seed
    return best_seed
