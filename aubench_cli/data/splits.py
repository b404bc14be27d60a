"""Subject-exclusive splits that stay put, and the record that keeps a run's test subjects honest.

``split_subjects`` places each subject by a hash of (seed, proportions, its own name) mapped to [0, 1) and cut at
the proportions: adding or removing subjects never moves another, and the same names, seed and shares give the
same split on any machine. ``split_report`` states the realised sizes and warns (with the fix) when a split is
too small or far from its share, which on small datasets happens. ``subject_roles`` is what ``train`` records in
its run directory; ``check_held_out`` is what ``evaluate`` asks before testing: no subject it would test may have
been in the run's training or validation. A subject is known by its name and its dataset: two subjects with one
name are the same person only when they share a source video (by the content hash of its file, which a copy or a
re-preprocessing keeps), so ``s01`` of one dataset never blocks ``s01`` of another.

K-fold cross-validation over subjects (``assign_folds``, ``read_fold_file``, ``fold_parts``, ``fold_plan``) is a
protocol decided when training, not a split of the cache: see the section below.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aubench_cli.errors import UsageError, plural

SPLITS = ("train", "val", "test")
ROLES_FILE = "data.json"  # the run directory's data record, where ``train`` writes ``subject_roles``
SPLIT_FIX = ("choose another --split-seed, give the splits in the manifest's split column, "
             "or train with k-fold cross-validation over subjects (--folds K --fold I)")
FEW_SUBJECTS_FIX = ("train with k-fold cross-validation over subjects (--folds K --fold I: every subject is tested "
                    "once), or give the splits in the manifest's split column")
# cache.json splits.seed_from: where the seed came from ("first-filling" and "first-balancing": caches made before the
# search took the seed closest to the shares instead of the first one that did)
SEED_HOW = ("given", "default", "closest-filling", "closest-balancing", "recorded", "first-filling", "first-balancing")
CHOSEN_HERE = ("default", "closest-filling", "closest-balancing", "first-filling", "first-balancing")  # by preprocess
SEED_TRIES = 1000  # seeds searched when seed 0 does not do


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
            if sizes[s] == 1 and want * n < 1.5:  # the shares themselves give it one subject: no seed does better
                warnings.append(f"the {s} split has {plural(sizes[s], 'subject')} (of {n}; {want:.0%} of {n} is "
                                f"{want * n:.1f}): too few subjects to hold out; {FEW_SUBJECTS_FIX}")
            elif sizes[s] < 2:
                warnings.append(f"the {s} split has {plural(sizes[s], 'subject')} (of {n}; wanted {want:.0%}): {SPLIT_FIX}")
            elif abs(sizes[s] / n - want) > want / 3:
                warnings.append(f"the {s} split holds {sizes[s] / n:.0%} of the {n} subjects, far from its {want:.0%}: "
                                f"{SPLIT_FIX}")
    return realised, warnings


def empty_split_error(split: str, cache_path: str | Path) -> UsageError:
    """What train and evaluate say when a split of the cache holds no frame: the fixes preprocess gives."""
    return UsageError(f"the {split} split of cache {cache_path} has no frames (no subject was placed in it)",
                      f"re-run aubench preprocess without --split-seed (its default gives every split a subject), "
                      f"{SPLIT_FIX}")


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


def subject_roles(cache: Any, train_index: Any, val_index: Any, test_index: Any = None) -> dict[str, Any]:
    """The run's own subject -> role map (train / val for the frames it used, test for ``test_index``: the cache's
    test split by default, a fold's test subjects under folds), with the source keys of each training and
    validation subject's videos, for ``check_held_out``."""
    import numpy as np

    roles: dict[str, str] = {}
    test_index = cache.indices("test") if test_index is None else test_index
    for role, index in (("train", train_index), ("val", val_index), ("test", test_index)):
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


def closest_seed(subjects: list[str], proportions=(0.74, 0.11, 0.15), start: int = 0, tries: int = SEED_TRIES,
                 accept: Callable[[int], bool] | None = None) -> int | None:
    """Of the seeds ``start .. start + tries - 1`` that give every split with a share above 0 a subject (and that
    ``accept`` takes, when given), the one whose realised subject counts are closest to the shares (L1 distance to
    share x subjects; the smallest seed among equals); None when none does. Closest, not first: the first seed that
    fills the splits of 20 subjects can leave 11 of them to train, the closest leaves 15."""
    names = sorted(set(subjects))
    total = float(sum(proportions))
    target = [p / total * len(names) for p in proportions]
    best, best_seed = None, None
    for seed in range(start, start + tries):
        sizes = _sizes(names, proportions, seed)
        if any(n == 0 and p > 0 for n, p in zip(sizes, proportions)):
            continue
        distance = sum(abs(n - t) for n, t in zip(sizes, target))
        if (best is None or distance < best - 1e-9) and (accept is None or accept(seed)):
            best, best_seed = distance, seed
    return best_seed


def choose_split_seed(subjects: list[str], proportions=(0.74, 0.11, 0.15), given: int | None = None,
                      recorded: dict[str, Any] | None = None,
                      coded: dict[str, tuple[set, set]] | None = None) -> tuple[int, str, str | None]:
    """The split seed of a preprocess run, where it came from (``SEED_HOW``) and a note to print (None: nothing
    to say). ``given`` (``--split-seed``) is obeyed as given. Without it: the seed the existing cache records
    (``recorded``: its header's ``splits``) when made with the same shares and it still gives every wanted split a
    subject, so a rerun with added subjects moves no one (adding subjects never empties a split); else seed 0 when
    it fills every split with a share above 0, else of the first 1000 seeds that do, the one closest to the shares
    (``closest_seed``); seed 0 when none can (fewer subjects than wanted splits: ``split_report`` warns). ``coded``
    (subject -> the AUs it has a positive label for, and those it has a negative label for): when that seed leaves
    some split without a positive or a negative frame of an AU the dataset codes both ways (a small set: training
    or evaluation would refuse it), the seed closest to the shares of those that fill every split and balance every
    AU in each is used instead (``closest-balancing``), where one of the first 1000 does."""
    chosen = _choose_filling(subjects, proportions, given, recorded)
    if chosen[1] not in ("default", "closest-filling") or not coded:
        return chosen
    wanted = [s for s, p in zip(SPLITS, proportions) if p > 0]
    lacking = unbalanced(subjects, proportions, chosen[0], coded, wanted)
    if not lacking:
        return chosen
    seed = closest_seed(subjects, proportions, accept=lambda s: not unbalanced(subjects, proportions, s, coded, wanted))
    if seed is None:
        return chosen
    return seed, "closest-balancing", (
        f"split seed {seed}: seed {chosen[0]} leaves {'; '.join(lacking[:3])} without a positive or a negative "
        f"frame, so of the seeds that give every split a subject and both kinds of frame of every AU, the one "
        f"closest to the shares ({_counts(subjects, proportions, seed)}) is used and recorded in the cache (a rerun "
        "keeps it; --split-seed N or the manifest's split column choose the split yourself)")


def _sizes(subjects: list[str], proportions, seed: int) -> list[int]:
    """Subjects per split (train, val, test) under ``seed``."""
    got = list(split_subjects(subjects, proportions, seed).values())
    return [got.count(s) for s in SPLITS]


def _counts(subjects: list[str], proportions, seed: int) -> str:
    """'train 15, val 2, test 3 subjects' under ``seed`` (the splits with a share)."""
    sizes = _sizes(subjects, proportions, seed)
    return ", ".join(f"{s} {n}" for s, n, p in zip(SPLITS, sizes, proportions) if p > 0) + " subjects"


def unbalanced(subjects: list[str], proportions, seed: int, coded: dict[str, tuple[set, set]],
               wanted: list[str]) -> list[str]:
    """``"<split>: AU,..."`` for each wanted split lacking a positive or a negative label of an AU that the
    dataset (``coded``: subject -> (AUs with a positive, AUs with a negative)) codes both ways."""
    both = set.union(set(), *(p for p, _ in coded.values())) & set.union(set(), *(n for _, n in coded.values()))
    where = split_subjects(sorted(set(subjects)), proportions, seed)
    out = []
    for split in wanted:
        members = [coded.get(name, (set(), set())) for name, s in where.items() if s == split]
        pos = set.union(set(), *(p for p, _ in members))
        neg = set.union(set(), *(n for _, n in members))
        missing = sorted(both - (pos & neg))
        if missing:
            out.append(f"{split}: {', '.join(map(str, missing))}")
    return out


def _choose_filling(subjects: list[str], proportions=(0.74, 0.11, 0.15), given: int | None = None,
                    recorded: dict[str, Any] | None = None) -> tuple[int, str, str | None]:
    """``choose_split_seed`` without the labels: obeyed, recorded, default or closest-filling."""
    if given is not None:
        return int(given), "given", None
    wanted = [s for s, p in zip(SPLITS, proportions) if p > 0]

    def fills(seed: int) -> bool:
        return set(wanted) <= set(split_subjects(subjects, proportions, seed).values())

    if recorded and recorded.get("source") == "seed" and recorded.get("seed") is not None \
            and [round(float(p), 6) for p in recorded.get("proportions", [])] == [round(float(p), 6) for p in proportions]:
        seed = int(recorded["seed"])
        if fills(seed):
            note = None if seed == 0 else (f"split seed {seed}, as recorded in the cache (kept so that added subjects "
                                           "move no one; --split-seed N chooses another)")
            return seed, "recorded", note
    if fills(0) or len(set(subjects)) < len(wanted):
        return 0, "default", None
    seed = closest_seed(subjects, proportions)
    if seed is None:
        return 0, "default", None
    empty = [s for s in wanted if s not in set(split_subjects(subjects, proportions, 0).values())]
    return seed, "closest-filling", (
        f"split seed {seed}: the default seed 0 leaves the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
        f"empty with these {len(set(subjects))} subjects, so of the seeds that give {', '.join(wanted)} a subject "
        f"each, the one closest to the shares ({_counts(subjects, proportions, seed)}) is used and recorded in the "
        "cache (a rerun keeps it; --split-seed N or the manifest's split column choose the split yourself)")


def seed_closest_to_shares(subjects: list[str], proportions=(0.74, 0.11, 0.15), start: int = 0,
                           tries: int = 200) -> int:
    """``closest_seed`` from ``start`` (the demo's, from its own seed), ``start`` when no seed fills the splits:
    what a tiny set such as the demo's needs (10 subjects: 7 / 1 / 2, not a test split of one subject)."""
    seed = closest_seed(subjects, proportions, start, tries)
    return start if seed is None else seed


# -- k-fold cross-validation over subjects ----------------------------------------------------------------------
#
# Folds are a protocol, not data: the cache keeps its own split, and a run under folds ignores it. ``assign_folds``
# orders the subjects by blake2b of (fold seed, name) alone and deals them round-robin (fold sizes differ by at
# most one; the order does not depend on K, nor on the order the names come in); a fold file (``subject,fold``,
# as published fold lists are given) wins over the hash. Fold I of K is the test part; validation is a seeded
# share of the other folds' subjects (``fold_parts``); training is the rest.

FOLD_SOURCES = ("hash", "file")
FOLDS_KEY = "folds"  # data.json: {"k", "fold", "source", "fold_seed", "subjects": {"train", "val", "test"}}


def fold_order_key(name: str, seed: int, purpose: str = "fold") -> bytes:
    """A subject's sort key for dealing folds (``purpose`` "fold") or drawing validation ("val"): blake2b of
    (seed, purpose, name)."""
    return hashlib.blake2b(f"{int(seed)}|{purpose}|{name}".encode(), digest_size=8).digest()


def assign_folds(subjects: list[str], k: int, seed: int = 0) -> dict[str, int]:
    """Subject -> fold 0..k-1: the subjects sorted by ``fold_order_key`` (ties by name), dealt round-robin."""
    names = sorted(set(subjects))
    check_fold_count(k, len(names))
    order = sorted(names, key=lambda n: (fold_order_key(n, seed), n))
    return {name: i % k for i, name in enumerate(order)}


def check_fold_count(k: int, n_subjects: int) -> None:
    if k < 2:
        raise UsageError(f"--folds must be at least 2, got {k}", "e.g. --folds 3, the protocol of most AU papers")
    if k > n_subjects:
        raise UsageError(f"--folds {k} needs at least {k} subjects; the cache has {n_subjects}",
                         f"use --folds {max(2, n_subjects)} or fewer")


def read_fold_file(path: str | Path, subjects: list[str] | None, k: int | None = None) -> dict[str, int]:
    """Subject -> fold from a CSV of ``subject,fold`` rows (a header row is optional; blank lines and lines
    starting with # are skipped). Every subject of the cache (``subjects``) must be listed once, no other; folds
    are 0..K-1 with none empty (K: ``k`` when given, else the number of folds in the file). ``subjects`` None
    checks the file alone (the subjects it lists), where no cache can be read."""
    import csv

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read fold file {path}: {exc.strerror or exc}",
                         "give a CSV file of subject,fold rows (--fold-file FILE)") from None
    fix = "each row is subject,fold with folds numbered from 0, e.g. F001,0"
    out: dict[str, int] = {}
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)
            and not r[0].strip().startswith("#")]
    for line, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if len(cells) < 2 or not cells[0]:
            raise UsageError(f"fold file {path}, row {line}: expected subject,fold, got {','.join(row)!r}", fix)
        name, fold = cells[0], cells[1]
        try:
            number = int(fold)
        except ValueError:
            if line == 1:  # a header
                continue
            raise UsageError(f"fold file {path}, row {line}: fold {fold!r} of {name} is not a whole number",
                             fix) from None
        if number < 0:
            raise UsageError(f"fold file {path}, row {line}: fold {number} of {name} is negative", fix)
        if out.get(name, number) != number:
            raise UsageError(f"fold file {path} puts {name} in two folds ({out[name]} and {number})",
                             "list every subject in one fold")
        out[name] = number
    if not out:
        raise UsageError(f"fold file {path} lists no subject", fix)
    known = set(out) if subjects is None else set(subjects)
    unknown = sorted(set(out) - known)
    if unknown:
        raise UsageError(f"fold file {path} names {len(unknown)} subject{'s' if len(unknown) > 1 else ''} the cache "
                         f"does not have: {_names(unknown)}",
                         f"the cache's subjects are {_names(sorted(known))}; fix the names or drop those rows")
    missing = sorted(known - set(out))
    if missing:
        raise UsageError(f"fold file {path} does not place {len(missing)} subject{'s' if len(missing) > 1 else ''} "
                         f"of the cache: {_names(missing)}",
                         "give every subject of the cache a fold (under folds every subject is in exactly one)")
    used = sorted(set(out.values()))
    k = k if k is not None else max(used) + 1
    check_fold_count(k, len(known))
    outside = [f for f in used if f >= k]
    if outside:
        raise UsageError(f"fold file {path} uses fold {outside[0]}, but --folds {k} numbers them 0..{k - 1}",
                         f"number the folds 0..{k - 1}, or pass --folds {max(used) + 1}")
    empty = [f for f in range(k) if f not in used]
    if empty:
        raise UsageError(f"fold file {path} has no subject in fold{'s' if len(empty) > 1 else ''} "
                         f"{', '.join(map(str, empty))} (folds 0..{k - 1})",
                         "number the folds 0..K-1 without gaps")
    return dict(sorted(out.items()))


def _names(names: list[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def fold_parts(assignment: dict[str, int], fold: int, val_frac: float = 0.15, seed: int = 0) -> dict[str, list[str]]:
    """The three parts of fold ``fold``: ``test`` its subjects, ``val`` a share of the others (``val_frac`` of them
    rounded half up, at least one: the first by ``fold_order_key(name, seed, "val")``), ``train`` the rest."""
    k = max(assignment.values()) + 1
    if not 0 <= fold < k:
        raise UsageError(f"--fold {fold} is not a fold of {k} (folds are numbered 0..{k - 1})",
                         f"pass --fold 0 .. --fold {k - 1}")
    if not 0 < val_frac < 1:
        raise UsageError(f"--val-subjects-frac must be between 0 and 1, got {val_frac}",
                         "e.g. 0.15: validation on 15 % of the training subjects")
    test = sorted(s for s, f in assignment.items() if f == fold)
    rest = sorted((s for s, f in assignment.items() if f != fold), key=lambda n: (fold_order_key(n, seed, "val"), n))
    n_val = max(1, math.floor(val_frac * len(rest) + 0.5))
    if n_val >= len(rest):
        raise UsageError(f"fold {fold} leaves {len(rest)} subject{'s' if len(rest) != 1 else ''} outside its test "
                         f"part: too few to validate on {n_val} and train on the rest",
                         "use fewer folds (--folds), a smaller --val-subjects-frac, or more subjects")
    return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": test}


@dataclass
class FoldPlan:
    """A run's fold: K, its number, where the assignment came from, and the subjects of its three parts."""

    k: int
    fold: int
    source: str  # "hash" or "file"
    fold_seed: int
    assignment: dict[str, int]
    parts: dict[str, list[str]]
    file: str | None = None

    def record(self) -> dict[str, Any]:
        """What data.json keeps under ``folds`` (report and eval read these names)."""
        out: dict[str, Any] = {"k": self.k, "fold": self.fold, "source": self.source, "fold_seed": self.fold_seed,
                               "subjects": {p: list(self.parts[p]) for p in SPLITS}}
        if self.file:
            out["file"] = self.file
        return out


def fold_assignment(subjects: list[str], k: int | None, seed: int = 0,
                    fold_file: str | Path | None = None) -> tuple[dict[str, int], str]:
    """Subject -> fold and its source: the fold file when given (it wins over the hash), else ``assign_folds``."""
    if fold_file:
        return read_fold_file(fold_file, subjects, k), "file"
    if k is None:
        raise UsageError("no number of folds", "pass --folds K or --fold-file FILE")
    return assign_folds(subjects, k, seed), "hash"


def fold_plan(cache: Any, data_cfg: Any) -> FoldPlan | None:
    """The fold a run's settings (its ``data`` section) ask for on ``cache``, or None when they ask for none."""
    folds, fold, fold_file = data_cfg.folds, data_cfg.fold, data_cfg.fold_file
    if folds is None and fold is None and not fold_file:
        return None
    if fold is None:
        raise UsageError("--folds / --fold-file need --fold I: the fold this run tests on (0-based)",
                         "e.g. --folds 3 --fold 0; to run every fold: aubench study PRESET --folds 3")
    if folds is None and not fold_file:
        raise UsageError(f"--fold {fold} needs --folds K (or --fold-file FILE)", f"e.g. --folds 3 --fold {fold}")
    assignment, source = fold_assignment(list(cache.subjects), folds, data_cfg.fold_seed, fold_file)
    k = max(assignment.values()) + 1
    parts = fold_parts(assignment, fold, data_cfg.val_subjects_frac, data_cfg.fold_seed)
    return FoldPlan(k, fold, source, int(data_cfg.fold_seed), assignment, parts,
                    str(Path(fold_file).resolve()) if fold_file else None)


def subject_frames(cache: Any, names: list[str]) -> Any:
    """Frame indices (sorted) of the subjects ``names`` in ``cache``."""
    import numpy as np

    wanted = set(names)
    parts = [np.arange(cache.video_offsets[v], cache.video_offsets[v + 1], dtype=np.int64)
             for v, s in enumerate(cache.video_subject) if s in wanted]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def fold_eval_index(run_dir: str | Path, cache: Any, split: str) -> dict[str, Any] | None:
    """For a run trained under folds, evaluated on its own cache (the content it was trained on): the frames of
    its fold's ``split`` part (test: the fold's test subjects), with ``fold``, ``folds`` and the ``subjects``.
    None for a run without folds, another cache (whose own splits apply) or a split that is not a fold part."""
    from aubench_cli.data.cache import cache_identity

    try:
        record = json.loads((Path(run_dir) / ROLES_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    folds = record.get(FOLDS_KEY) if isinstance(record, dict) else None
    if not folds or split not in SPLITS or record.get("cache_identity") != cache_identity(cache):
        return None
    names = list(folds["subjects"][split])
    return {"index": subject_frames(cache, names), "fold": int(folds["fold"]), "folds": int(folds["k"]),
            "subjects": names}
