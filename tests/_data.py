"""Where the tests find the real SST-2 / Rotten Tomatoes files, and a few invented rows in the same layout.

Tests that check facts of the real data (sizes, overlap, first rows) call :func:`real_data_dir`; tests whose
sentences are incidental write their own rows with :func:`write_invented_data`, and end-to-end runs that are meant to
see the real sentences where they can take :func:`real_or_invented_data_dir` (real where found, else invented).

- ``LIGHTNING_INFLECT_DATA`` set: it must name a data folder, else the test fails (a wrong path is an error).
- unset: ``../shared/data`` beside the repository is used where it exists; where it does not, the test skips with
  one reason, which starts with :data:`SKIP_PREFIX`.
- ``LIGHTNING_INFLECT_REQUIRE_DATA=1`` (``.ci/run`` sets it when the data folder is there): that skip is a failure,
  so that no data test can silently stop running in CI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from lightning_inflect.experiments import DATA_DIR_ENV_VAR
from lightning_inflect.experiments.synthetic import synthetic_task

REQUIRE_ENV_VAR = "LIGHTNING_INFLECT_REQUIRE_DATA"
# CI clones the repository into some folder with `shared/` beside it: <parent>/<repo>/tests/_data.py.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
LAYOUT = "sst2/{train,dev}.tsv and rotten_tomatoes/{train,validation,test}.tsv (or .../rt-polarity.{pos,neg})"
SKIP_PREFIX = "needs the real SST-2/Rotten Tomatoes data:"
RT_SPLITS = ("train", "validation", "test")


def _not_a_data_dir(path: Path) -> str | None:
    """Why ``path`` is not a data folder of :data:`LAYOUT`, or None when it is one."""
    if not path.is_dir():
        return "it is not a directory"
    missing = [name for name in ("sst2/train.tsv", "sst2/dev.tsv") if not (path / name).is_file()]
    rt = path / "rotten_tomatoes"
    originals = [rt / name for name in ("rt-polarity.pos", "rt-polarity.neg")]
    if not all(p.is_file() for p in originals):
        missing += [f"rotten_tomatoes/{split}.tsv" for split in RT_SPLITS if not (rt / f"{split}.tsv").is_file()]
    return f"it lacks {', '.join(missing)}" if missing else None


def _skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV_VAR) == "1":
        pytest.fail(f"{reason} (a failure, not a skip: `{REQUIRE_ENV_VAR}=1`)", pytrace=False)
    pytest.skip(reason)


def real_data_dir(*needs: str) -> Path:
    """The folder of the real data, for a test that needs them; ``needs`` names further files it reads.

    Fails when ``LIGHTNING_INFLECT_DATA`` (or the default folder, where it exists) is not a data folder; skips (or
    fails, under ``LIGHTNING_INFLECT_REQUIRE_DATA=1``) when the variable is unset and the default folder is absent,
    or when a file of ``needs`` is not there.
    """
    env_value = os.environ.get(DATA_DIR_ENV_VAR)
    if env_value:  # set on purpose: a wrong path is an error, not a reason to skip
        path, source = Path(env_value).expanduser(), f"`{DATA_DIR_ENV_VAR}={env_value}`"
    elif DEFAULT_DATA_DIR.is_dir():
        path, source = DEFAULT_DATA_DIR, f"the default data folder `{DEFAULT_DATA_DIR}`"
    else:
        _skip_or_fail(
            f"{SKIP_PREFIX} `{DATA_DIR_ENV_VAR}` is not set and `{DEFAULT_DATA_DIR}` does not exist; set"
            f" `{DATA_DIR_ENV_VAR}` to a folder holding {LAYOUT}"
        )
    why = _not_a_data_dir(path)
    if why is not None:
        pytest.fail(
            f"{source} is not a data folder: {why}. Point `{DATA_DIR_ENV_VAR}` at a folder holding {LAYOUT}, or"
            " unset it (without the default folder the tests that need the real data then skip).",
            pytrace=False,
        )
    absent = [name for name in needs if not (path / name).is_file()]
    if absent:
        _skip_or_fail(f"{SKIP_PREFIX} {', '.join(absent)} not found under {source}")
    return path


def real_or_invented_data_dir(root: Path) -> Path:
    """The real data folder where one is found or named (as :func:`real_data_dir`), else invented rows under ``root``.

    For runs whose checks hold on any sentences: CI runs them on the real data, a clone without it on invented rows.
    """
    if os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR.is_dir():
        return real_data_dir()
    return write_invented_data(root)


def write_invented_data(root: Path, n: int = 80, overlap: int = 8) -> Path:
    """A data folder of :data:`LAYOUT` under ``root`` with ``n`` rows a split of the built-in synthetic task.

    SST-2 rows are film reviews in GLUE's format (``sentence<TAB>label`` header, a space after each sentence),
    Rotten Tomatoes rows restaurant reviews, plus the first ``overlap`` SST-2 train rows in its train and test splits
    (as the real test set shares sentences with SST-2 train); no real sentence is in them.
    """
    sst2_train = synthetic_task("film", n, seed=10)
    shared = sst2_train[:overlap]
    files = {
        "sst2/train.tsv": ("sentence", sst2_train),
        "sst2/dev.tsv": ("sentence", synthetic_task("film", n, seed=11)),
        "rotten_tomatoes/train.tsv": ("text", synthetic_task("restaurant", n, seed=12) + shared),
        "rotten_tomatoes/validation.tsv": ("text", synthetic_task("restaurant", n, seed=13)),
        "rotten_tomatoes/test.tsv": ("text", synthetic_task("restaurant", n, seed=14) + shared),
    }
    for name, (column, pairs) in files.items():
        space = " " if column == "sentence" else ""
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{text}{space}\t{label}\n" for text, label in pairs)
        (root / name).write_text(f"{column}\tlabel\n{rows}", encoding="utf-8")
    return root
