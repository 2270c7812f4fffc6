"""Reading the SST-2 and Rotten Tomatoes TSV files (one ``text<TAB>label`` row per sentence, with a header).

The files are never copied into the project: every loader takes the data directory as an argument, or reads it from
the ``LIGHTNING_INFLECT_DATA`` environment variable through :func:`resolve_data_dir`.

Expected layout of the data directory::

    <data_dir>/rotten_tomatoes/{train,validation,test}.tsv   # header `text<TAB>label`
    <data_dir>/sst2/{train,dev}.tsv                           # header `sentence<TAB>label` (GLUE)

Instead of the Rotten Tomatoes TSV files, the original release works too: ``rt-polarity.pos`` and
``rt-polarity.neg`` (latin-1) in ``rotten_tomatoes/`` or in ``rotten_tomatoes/rt-polaritydata/`` as the tarball
unpacks; :func:`read_rt_polarity` derives the same splits from them.

On a machine with network, ``data_dir="hf-hub"`` (``--data-dir hf-hub``, or ``LIGHTNING_INFLECT_DATA=hf-hub``) loads
the same splits from the Hugging Face hub instead, with the ``datasets`` library (``pip install
'lightning-inflect[hub]'``); see :data:`HUB_DATASETS`. They come back as the same ``(text, label)`` pairs, in the
same order, as the files give.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

__all__ = [
    "DATA_DIR_ENV_VAR",
    "HUB",
    "HUB_DATASETS",
    "RT_ORIGINAL_SPLITS",
    "RottenTomatoesSplit",
    "SST2Split",
    "is_hub",
    "load_from_hub",
    "load_rotten_tomatoes",
    "load_sst2",
    "read_rt_polarity",
    "read_tsv",
    "resolve_data_dir",
]

DATA_DIR_ENV_VAR = "LIGHTNING_INFLECT_DATA"

RottenTomatoesSplit = Literal["train", "validation", "test"]
SST2Split = Literal["train", "dev"]

HUB = "hf-hub"
"""The ``data_dir`` value that loads the datasets from the Hugging Face hub instead of a directory."""

HUB_DATASETS: dict[str, tuple[str, str | None, str, dict[str, str]]] = {
    # our name: (hub repository, configuration, text column, our split -> hub split)
    "sst2": ("nyu-mll/glue", "sst2", "sentence", {"train": "train", "dev": "validation"}),
    "rotten_tomatoes": (
        "cornell-movie-review-data/rotten_tomatoes",
        None,
        "text",
        {"train": "train", "validation": "validation", "test": "test"},
    ),
}
"""Where ``data_dir="hf-hub"`` finds each dataset (GLUE's SST-2 ``dev`` is the hub's ``validation`` split)."""

_TEXT_COLUMNS = ("text", "sentence")
_EXPECTED_FILES = (
    "`rotten_tomatoes/{train,validation,test}.tsv` (or the original `rotten_tomatoes/rt-polarity.{pos,neg}`) and"
    " `sst2/{train,dev}.tsv`"
)
RT_ORIGINAL_LINES = 5331
"""Snippets in each of ``rt-polarity.pos`` and ``rt-polarity.neg`` (sentence polarity dataset v1.0)."""
RT_ORIGINAL_SPLITS = {"train": (0, 4265), "validation": (4265, 4798), "test": (4798, RT_ORIGINAL_LINES)}
"""Line ranges of each split in both original files: HF ``rotten_tomatoes``' 80/10/10 split, positives first."""
_HOW_TO_PASS = (
    f"Pass the directory that holds them with `--data-dir PATH` (or the `data_dir` argument), or set the environment"
    f" variable `{DATA_DIR_ENV_VAR}=PATH`; with network, `--data-dir {HUB}` loads them from the Hugging Face hub"
    " (`pip install 'lightning-inflect[hub]'`)."
)


def read_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    r"""Read a ``text<TAB>label`` (or GLUE ``sentence<TAB>label``) TSV file with a header row.

    Only ``"\n"`` ends a row (a ``"\r\n"`` ending is accepted too): the Rotten Tomatoes files have 22 rows with
    U+0085 (NEL), which :meth:`str.splitlines` would wrongly treat as a line break. Fields are split with :mod:`csv`
    and ``quoting=csv.QUOTE_NONE``, since the text contains ``"`` characters that are not quotes. The trailing space
    that GLUE keeps after each sentence is removed (spaces only: U+0085 at the edge of a text is kept).

    Args:
        path: The TSV file, UTF-8 encoded (a byte-order mark is ignored).

    Returns:
        The rows as ``(text, label)`` pairs, in file order, with integer labels.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the header is not ``text<TAB>label``/``sentence<TAB>label``, a row does not have exactly two
            fields, or a label is not an integer.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp()) / "tiny.tsv"
        >>> _ = tmp.write_text('sentence\tlabel\nit \'s " fine "\x85really \t1\nbad\t0\n', encoding="utf-8")
        >>> read_tsv(tmp)
        [('it \'s " fine "\x85really', 1), ('bad', 0)]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a TSV file at `{path}` but it does not exist.")
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: tolerate a byte-order mark
        content = f.read()
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise ValueError(f"Expected a header row `text<TAB>label` in `{path}` but the file is empty.")

    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header, *rows = list(reader)
    except csv.Error as err:
        raise ValueError(f"Could not parse line {reader.line_num} of `{path}` as TSV: {err}.") from err
    if len(header) != 2 or header[0] not in _TEXT_COLUMNS or header[1] != "label":
        raise ValueError(
            f"Expected the header of `{path}` to be one of {[f'{c}<TAB>label' for c in _TEXT_COLUMNS]}"
            f" but got {'<TAB>'.join(header)!r}. Is this a GLUE SST-2 or Rotten Tomatoes TSV file?"
        )
    pairs: list[tuple[str, int]] = []
    for line_number, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise ValueError(
                f"Expected 2 tab-separated fields (text, label) on line {line_number} of `{path}` but got {len(row)}:"
                f" {row!r}."
            )
        text, label = row
        try:
            label_int = int(label)
        except ValueError:
            raise ValueError(
                f"Expected an integer label on line {line_number} of `{path}` but got {label!r}."
            ) from None
        pairs.append((text.rstrip(" "), label_int))
    return pairs


def read_rt_polarity(folder: str | os.PathLike, split: str) -> list[tuple[str, int]]:
    r"""One split of Rotten Tomatoes from the original ``rt-polarity.pos``/``.neg`` files, as HF builds it.

    Each file is decoded as latin-1 (so byte ``0x85`` becomes U+0085, not a line break), split on ``"\n"`` only,
    each line stripped; the split takes the lines :data:`RT_ORIGINAL_SPLITS` names from both files, positives
    (label 1) first. The result equals the HF-identical ``<split>.tsv``.

    Args:
        folder: The folder holding ``rt-polarity.pos`` and ``rt-polarity.neg``.
        split: One of ``"train"``, ``"validation"``, ``"test"``.

    Raises:
        ValueError: If ``split`` is not allowed, or a file does not have the release's 5,331 lines.
        FileNotFoundError: If a file is missing.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> for name, word in (("pos", b"good"), ("neg", b"bad")):
        ...     lines = b"".join(b"%s %d \x85\n" % (word, i) for i in range(5331))
        ...     _ = (tmp / f"rt-polarity.{name}").write_bytes(lines)
        >>> test = read_rt_polarity(tmp, "test")
        >>> len(test), test[0], test[-1]
        (1066, ('good 4798', 1), ('bad 5330', 0))
    """
    _check_split(split, list(RT_ORIGINAL_SPLITS))
    start, stop = RT_ORIGINAL_SPLITS[split]
    paths = {label: Path(folder) / f"rt-polarity.{name}" for name, label in (("pos", 1), ("neg", 0))}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"Expected the file `{path}` (sentence polarity dataset v1.0) but it is missing.")
    pairs: list[tuple[str, int]] = []
    for label, path in paths.items():
        lines = path.read_bytes().decode("latin-1").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != RT_ORIGINAL_LINES:
            raise ValueError(
                f"Expected {RT_ORIGINAL_LINES} lines in `{path}` (sentence polarity dataset v1.0) but got {len(lines)}."
                " Use the original `rt-polaritydata.tar.gz` files, or the HF-identical `{train,validation,test}.tsv`."
            )
        pairs.extend((line.strip(), label) for line in lines[start:stop])
    return pairs


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Find the data directory: the explicit argument, else the ``LIGHTNING_INFLECT_DATA`` environment variable.

    Args:
        data_dir: The directory holding ``rotten_tomatoes/`` and ``sst2/``. ``None`` reads the environment variable.

    Returns:
        The directory as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        FileNotFoundError: If neither is given, or the directory does not exist; the message lists the expected
            files and how to pass the directory.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.mkdtemp()
        >>> resolve_data_dir(tmp) == Path(tmp)
        True
    """
    source = "the `data_dir` argument"
    if data_dir is None:
        env_value = os.environ.get(DATA_DIR_ENV_VAR)
        if not env_value:
            raise FileNotFoundError(
                f"No data directory given: expected a directory holding {_EXPECTED_FILES}. {_HOW_TO_PASS}"
            )
        data_dir, source = env_value, f"the environment variable `{DATA_DIR_ENV_VAR}`"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Expected the data directory `{path}` (from {source}) to exist, holding {_EXPECTED_FILES}, but it is not"
            f" a directory. {_HOW_TO_PASS}"
        )
    return path


def is_hub(data_dir: str | os.PathLike | None) -> bool:
    """Whether ``data_dir`` (or, for None, the ``LIGHTNING_INFLECT_DATA`` variable) asks for the hub.

    Example:
        >>> is_hub("hf-hub"), is_hub("data/hf-hub"), is_hub(Path("hf-hub"))
        (True, False, False)
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV_VAR)
    return isinstance(data_dir, str) and data_dir == HUB


def load_from_hub(dataset: str, split: str) -> list[tuple[str, int]]:
    """One split of ``"sst2"`` or ``"rotten_tomatoes"`` from the Hugging Face hub, as ``(text, label)`` pairs.

    Uses :func:`datasets.load_dataset` (and so its cache and its offline mode); trailing spaces are removed from the
    text as :func:`read_tsv` does, so the pairs equal those read from the TSV files.

    Raises:
        ValueError: If ``dataset`` or ``split`` is not one of the allowed values.
        ModuleNotFoundError: If the ``datasets`` library is not installed.
        ConnectionError: If the hub (or the local ``datasets`` cache, when offline) does not give the split.
    """
    if dataset not in HUB_DATASETS:
        raise ValueError(f"Expected argument `dataset` to be one of {list(HUB_DATASETS)} but got {dataset!r}.")
    repo, config, column, splits = HUB_DATASETS[dataset]
    _check_split(split, list(splits))
    try:
        import datasets
    except ImportError as err:
        raise ModuleNotFoundError(
            f"`data_dir={HUB!r}` loads SST-2 and Rotten Tomatoes with the `datasets` library, which is not installed."
            f" Install it with `pip install 'lightning-inflect[hub]'`, or pass a data directory holding"
            f" {_EXPECTED_FILES} instead."
        ) from err
    name = f"{repo}" + (f" ({config})" if config else "")
    try:
        rows = datasets.load_dataset(repo, config, split=splits[split])
    except Exception as err:  # network, missing cache in offline mode, hub errors: all say the same to the user
        raise ConnectionError(
            f"Could not load split {splits[split]!r} of {name} from the Hugging Face hub"
            f" ({type(err).__name__}: {str(err).rstrip('.')}). Without network (or with HF_HUB_OFFLINE=1 and nothing"
            f" cached), pass a data directory holding {_EXPECTED_FILES} instead."
        ) from err
    missing = {column, "label"} - set(rows.column_names)
    if missing:
        raise ValueError(f"Expected columns {[column, 'label']} in {name} from the hub but got {rows.column_names}.")
    return [(str(t).rstrip(" "), int(y)) for t, y in zip(rows[column], rows["label"], strict=True)]


def _check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"Expected argument `split` to be one of {list(allowed)} but got {split!r}.")


def _dataset_file(data_dir: str | os.PathLike | None, dataset: str, split: str) -> Path:
    path = resolve_data_dir(data_dir) / dataset / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected the file `{path}` but it does not exist. The data directory must hold {_EXPECTED_FILES}"
            f". {_HOW_TO_PASS}"
        )
    return path


def load_rotten_tomatoes(
    data_dir: str | os.PathLike | None, split: RottenTomatoesSplit = "train"
) -> list[tuple[str, int]]:
    """Load a Rotten Tomatoes split (HF ``rotten_tomatoes``: 8530 / 1066 / 1066 rows, labels 0 = neg, 1 = pos).

    Rows come in file order, all positive then all negative: shuffle them before taking a subset.

    Args:
        data_dir: The data directory (``None``: the ``LIGHTNING_INFLECT_DATA`` environment variable; ``"hf-hub"``:
            the Hugging Face hub, see :func:`load_from_hub`).
        split: One of ``"train"``, ``"validation"``, ``"test"``.

    Returns:
        The ``(text, label)`` pairs of ``<data_dir>/rotten_tomatoes/<split>.tsv``, or, where that file is missing,
        the same pairs derived from the original ``rt-polarity.{pos,neg}`` (see :func:`read_rt_polarity`).

    Raises:
        ValueError: If ``split`` is not one of the allowed values.
        FileNotFoundError: If the data directory or the file is missing.

    Example:
        >>> load_rotten_tomatoes(None, split="dev")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `split` to be one of ['train', 'validation', 'test'] but got 'dev'.
    """
    _check_split(split, get_args(RottenTomatoesSplit))
    if is_hub(data_dir):
        return load_from_hub("rotten_tomatoes", split)
    folder = resolve_data_dir(data_dir) / "rotten_tomatoes"
    if not (folder / f"{split}.tsv").is_file():
        for originals in (folder, folder / "rt-polaritydata"):
            if (originals / "rt-polarity.pos").is_file() or (originals / "rt-polarity.neg").is_file():
                return read_rt_polarity(originals, split)
    return read_tsv(_dataset_file(data_dir, "rotten_tomatoes", split))


def load_sst2(data_dir: str | os.PathLike | None, split: SST2Split = "train") -> list[tuple[str, int]]:
    """Load a GLUE SST-2 split (train 67,349 rows, dev 872; labels 0 = negative, 1 = positive).

    GLUE's test split has no labels and is not part of the data directory. Note that 71% of the Rotten Tomatoes test
    sentences occur verbatim in SST-2 train (counted by :mod:`lightning_inflect.experiments.study_data`).

    Args:
        data_dir: The data directory (``None``: the ``LIGHTNING_INFLECT_DATA`` environment variable; ``"hf-hub"``:
            the Hugging Face hub, see :func:`load_from_hub`).
        split: One of ``"train"``, ``"dev"``.

    Returns:
        The ``(text, label)`` pairs of ``<data_dir>/sst2/<split>.tsv``, trailing spaces removed.

    Raises:
        ValueError: If ``split`` is not one of the allowed values.
        FileNotFoundError: If the data directory or the file is missing.

    Example:
        >>> load_sst2(None, split="validation")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `split` to be one of ['train', 'dev'] but got 'validation'.
    """
    _check_split(split, get_args(SST2Split))
    if is_hub(data_dir):
        return load_from_hub("sst2", split)
    return read_tsv(_dataset_file(data_dir, "sst2", split))
