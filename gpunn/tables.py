"""A user's own table, read the way its writer meant it: columns by name, the index pandas
writes dropped, labels as the user wrote them, and the task they ask for.

One place reads every file and DataFrame a user brings (``gpunn train``, ``evaluate``,
``predict``, and ``Model`` on a DataFrame); what it learns is kept in the model (feature names,
target names, class labels), so new rows are read by name, in any order, and predictions come
back in the user's labels. Example::

    table = read_csv("iris.csv")                 # species (text) is the target: named last
    task = infer_task(table.y)                   # classify, classes ['setosa', ...]
    codes = encode(table.y, task.classes)        # class indices 0..2
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from gpunn.errors import FileFormatError, InvalidArgumentError

TARGET_NAMES = ("label", "target", "class", "y")  # a column named so is the target (any case)
INDEX_NAMES = ("", "index", "unnamed: 0")  # the first header cell of the index pandas writes
MOST_CLASSES = 200  # more distinct whole numbers than this are a regression's targets by default
_THOUSANDS = re.compile(r"[+-]?\d{1,3}([,.' ]\d{3})+([.,]\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


@dataclass
class Table:
    """A table's features and targets. ``y`` holds the targets as written: numbers (float64)
    or text (str), 1-D for one target column; ``feature_names``/``target_names`` are the
    header's names (None without a header); ``notes`` say what was decided and why."""

    X: numpy.ndarray
    y: numpy.ndarray | None
    feature_names: list[str] | None
    target_names: list[str] | None
    notes: list[str] = field(default_factory=list)
    target_why: str = ""


@dataclass
class Task:
    """What the targets ask for: "classify" with ``classes`` (the user's labels, sorted, or
    None for one-hot rows) or "regress"; ``why`` in words for the command line."""

    kind: str
    classes: list | None
    outputs: int
    why: str


# ---- reading CSV ----------------------------------------------------------------------------

def read_csv(path: str | Path, *, label: str | int | list | None = None,
             features: list | None = None, drop: list | None = None,
             keep_first_column: bool = False, header: bool | None = None,
             targets: bool = True, label_option: str = "--label") -> Table:
    """A CSV file as a Table: quoted cells unquoted (quoted numbers are numbers), a header
    found when the first line is not data, the index pandas writes dropped (unless
    ``keep_first_column``), the target column(s) chosen by ``label`` (names or 0-based
    positions, negative from the end; default: the one column named label, target, class or y,
    else the last); ``features`` keeps only those columns, ``drop`` leaves some out;
    ``targets=False`` reads every column as a feature (new rows to predict)."""
    path = Path(path)
    names, cells = _rows(path, header)
    notes: list[str] = []
    columns = list(range(len(cells.names)))
    if names is not None:
        duplicated = sorted({name for name in names if names.count(name) > 1 and name})
        if duplicated:
            raise FileFormatError(f"{path}: the header names {_quoted(duplicated)} more than "
                                  f"once; give every column its own name.")
        if names[0].strip().lower() in INDEX_NAMES and len(names) > 1:
            if keep_first_column:
                notes.append(f"kept the first column {names[0]!r} as a feature "
                             f"(--keep-first-column)")
            else:
                columns = columns[1:]
                notes.append(f"dropped the first column ({_shown(names[0])}: the index pandas "
                             f"writes with DataFrame.to_csv()); --keep-first-column keeps it")
    named = cells.names
    if targets and len(columns) < 2:
        raise FileFormatError(f"{path} has one column; expected the features and then the "
                              f"label, the last column, on each line (e.g. '0.5,1.2,0').")
    target_columns, why = ([], "") if not targets else \
        _target_columns(path, names, columns, label, label_option)
    chosen = _selected(path, names, [c for c in columns if c not in target_columns],
                       features, "--features") if features else \
        [c for c in columns if c not in target_columns]
    if drop:
        dropped = _selected(path, names, columns, drop, "--drop")
        if set(dropped) & set(target_columns):
            raise InvalidArgumentError(f"{path}: --drop names the target column(s) "
                                       f"{_quoted([named[c] for c in target_columns])}.")
        chosen = [column for column in chosen if column not in dropped]
    if not chosen:
        raise InvalidArgumentError(f"{path}: no feature columns are left (the file has "
                                   f"{len(columns)} columns, {len(target_columns)} of them "
                                   f"targets); check --label, --features and --drop.")
    cells.used = chosen + target_columns
    X = cells.numbers(chosen)
    y = None
    if target_columns:
        y = cells.targets(target_columns)
    return Table(X.astype(numpy.float32), y,
                 None if names is None else [names[c] for c in chosen],
                 None if names is None or not target_columns else
                 [names[c] for c in target_columns], notes, why)


def _rows(path: Path, header: bool | None) -> tuple[list[str] | None, _Cells]:
    """(the header's names or None, the data rows)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark
    except UnicodeDecodeError as error:
        raise FileFormatError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 CSV.") \
            from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise FileFormatError(f"{path} has no data rows; expected lines such as '0.5,1.2,0'.")
    separator = _separator([line for _, line in lines[:5]])
    first = list(csv.reader([line for _, line in lines[:2]], delimiter=separator))
    if header is None:
        header = _looks_like_header(first)
    names = [cell.strip() for cell in first[0]] if header else None
    body = lines[1:] if header else lines
    if not body:
        raise FileFormatError(f"{path} has a header but no data rows.")
    cells = _Cells(path, [line for _, line in body], [n for n, _ in body], separator,
                   quoted='"' in text)
    width = len(names) if names is not None else len(cells.row(0))
    for number, length in cells.widths():
        if length != width:
            first_line = "the header" if names is not None else f"line {body[0][0]}"
            raise FileFormatError(f"{path}, line {number}: expected {width} cells like "
                                  f"{first_line}, found {length}.")
    cells.names = names or [str(index) for index in range(width)]
    return names, cells


def _separator(lines: list[str]) -> str:
    """A comma, or the semicolon or tab of a file with no comma (as spreadsheets in many
    locales write CSV)."""
    for separator in (";", "\t"):
        counts = {line.count(separator) for line in lines}
        if len(counts) == 1 and counts != {0}:  # the same number of them on every line
            return separator
    return ","


def _looks_like_header(rows: list[list[str]]) -> bool:
    """A first line is a header when a cell of it is not a number where the line after it
    has one (a lone line: when any cell is not a number)."""
    first = [_number(cell) is None for cell in rows[0]]
    if len(rows) == 1:
        return any(first)
    second = [_number(cell) is not None for cell in rows[1]]
    return any(a and b for a, b in zip(first, second))


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


class _Cells:
    """The data rows, turned into numbers column by column, every problem reported at once."""

    def __init__(self, path: Path, text: list[str], numbers: list[int], separator: str, *,
                 quoted: bool) -> None:
        self.path, self.text, self.lines, self.separator = path, text, numbers, separator
        self.quoted, self.names, self._rows = quoted, [], None
        self.used: list[int] = []  # every column read, so one message names all empty cells

    @property
    def rows(self) -> list[list[str]]:
        """Every row as its cells (the csv module's reading, made once when needed)."""
        if self._rows is None:
            self._rows = list(csv.reader(self.text, delimiter=self.separator))
        return self._rows

    def row(self, index: int) -> list[str]:
        return next(csv.reader([self.text[index]], delimiter=self.separator))

    def widths(self) -> list[tuple[int, int]]:
        """(line number, cells) of each row; counted without the csv module where no cell is
        quoted."""
        if self.quoted:
            return [(n, len(row)) for n, row in zip(self.lines, self.rows)]
        return [(n, line.count(self.separator) + 1) for n, line in zip(self.lines, self.text)]

    def column(self, index: int) -> list[str]:
        return [row[index].strip() for row in self.rows]

    def numbers(self, columns: list[int]) -> numpy.ndarray:
        """The columns as float64, or an error naming every empty cell (the first five, then a
        count), the text columns, or cells written with thousands separators or decimal
        commas (each with its fix)."""
        table = self._loaded(columns)
        if table is None:
            self._refuse(columns)
        return self._finite(table, columns)

    def _finite(self, table: numpy.ndarray, columns: list[int]) -> numpy.ndarray:
        bad = numpy.argwhere(~numpy.isfinite(table))
        if len(bad):
            row, index = bad[0]
            raise FileFormatError(
                f"{self.path}, line {self.lines[row]}, column {self._where(columns[index])} is "
                f"{table[row, index]} ({len(bad)} such cells in all); expected finite numbers. "
                f"Remove or impute those cells first.")
        return table

    def targets(self, columns: list[int]) -> numpy.ndarray:
        """The target column(s): numbers where every cell is one, else (one column) text."""
        table = self._loaded(columns)
        if table is None and len(columns) == 1:
            values = self.column(columns[0])
            if any(_number(value) is None for value in values if value):
                self._empty([columns[0]])
                return numpy.array(values, dtype=numpy.str_)
        table = self.numbers(columns) if table is None else self._finite(table, columns)
        return table[:, 0] if len(columns) == 1 else table

    def _loaded(self, columns: list[int]) -> numpy.ndarray | None:
        """The columns as float64 when every cell is a number (NumPy's reader, in C)."""
        try:
            return numpy.loadtxt(self.text, delimiter=self.separator, quotechar='"',
                                 usecols=columns, ndmin=2, comments=None, dtype=numpy.float64)
        except ValueError:
            return None

    def _refuse(self, columns: list[int]) -> None:
        self._empty(sorted(set(self.used) | set(columns)))
        text, odd = [], []
        for c in columns:
            values = [value for value in self.column(c) if _number(value) is None]
            if not values:
                continue
            numeric_like = [value for value in values if _THOUSANDS.fullmatch(value)
                            or _DECIMAL_COMMA.fullmatch(value)]
            (odd if numeric_like else text).append((c, values[0]))
        if odd:
            c, value = odd[0]
            line = self._line(c, value)
            fix = ("decimals written with a comma: write them with a point (pandas: "
                   "DataFrame.to_csv(decimal='.'); a spreadsheet: save as CSV in an English "
                   "locale)" if _DECIMAL_COMMA.fullmatch(value) and not
                   _THOUSANDS.fullmatch(value) else
                   "a number with thousands separators: write it without them (pandas: "
                   "pd.read_csv(..., thousands=',') then to_csv(); a spreadsheet: a number "
                   "format without separators)")
            raise FileFormatError(f"{self.path}, line {line}, column {self._where(c)}: "
                                  f"{value!r} looks like {fix}.")
        listed = ", ".join(f"{self._where(c)} ({v!r} on line {self._line(c, v)})"
                           for c, v in text[:5])
        more = f" and {len(text) - 5} more" if len(text) > 5 else ""
        raise FileFormatError(
            f"{self.path}: column{'s' if len(text) > 1 else ''} {listed}{more} hold"
            f"{'' if len(text) > 1 else 's'} text, not a number; features must be numbers. "
            f"Encode text first (pandas: pd.get_dummies(df, columns=[...], dtype=float) for "
            f"categories), leave such columns out with --drop NAME, or make a text column the "
            f"target with --label NAME.")

    def _line(self, column: int, value: str) -> int:
        return self.lines[[row[column].strip() for row in self.rows].index(value)]

    def _empty(self, columns: list[int]) -> None:
        empty = [(self.lines[r], c) for r, row in enumerate(self.rows) for c in columns
                 if not row[c].strip()]
        if empty:
            shown = "; ".join(f"line {line}, column {self._where(c)}" for line, c in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise FileFormatError(f"{self.path}: {len(empty)} empty cell"
                                  f"{'s' if len(empty) > 1 else ''} ({shown}{more}); expected "
                                  f"numbers. Fill the missing values (pandas: df.fillna(...)) "
                                  f"or drop those rows (df.dropna()) first.")

    def _where(self, column: int) -> str:
        name = self.names[column]
        return f"{column + 1}" if name == str(column) else f"{column + 1} ({name!r})"


def _target_columns(path: Path, names: list[str] | None, columns: list[int],
                    label: Any, option: str) -> tuple[list[int], str]:
    """The target columns and why they were chosen."""
    if label is not None:
        chosen = _selected(path, names, columns, label, option)
        return chosen, f"{option} {','.join(str(token) for token in _tokens(label))}"
    if names is not None:
        matches = [c for c in columns if names[c].lower() in TARGET_NAMES]
        if len(matches) == 1:
            return matches, "named as a target is"
        if len(columns) < 2:
            raise FileFormatError(f"{path} has one column; expected features and a target.")
        several = (f"several columns ({_quoted([names[c] for c in matches])}) have a "
                   f"target's name" if matches else "no column is named label, target, class "
                                                    "or y")
        return [columns[-1]], f"the last column; {several}: --label NAME chooses another"
    if len(columns) < 2:
        raise FileFormatError(f"{path} has one column; expected the features and then the "
                              f"label, the last column, on each line (e.g. '0.5,1.2,0').")
    return [columns[-1]], "the last column; the file has no header: --label N chooses another"


def _selected(path: Path, names: list[str] | None, columns: list[int], wanted: Any,
              option: str) -> list[int]:
    """The columns ``wanted`` names: names from the header, or 0-based positions among
    ``columns`` (negative from the end); a comma-separated string or a list."""
    chosen = []
    for token in _tokens(wanted):
        text = str(token).strip()
        if names is not None and text in [names[c] for c in columns]:
            chosen.append(next(c for c in columns if names[c] == text))
            continue
        lowered = [c for c in columns if names is not None and names[c].lower() == text.lower()]
        if len(lowered) == 1:
            chosen.append(lowered[0])
            continue
        try:
            position = int(text)
        except ValueError:
            known = f"its columns are {_quoted([names[c] for c in columns])}" if names else \
                "it has no header, so give 0-based column numbers"
            raise InvalidArgumentError(f"{option} {text!r}: {path} has no such column; "
                                       f"{known}.") from None
        if not -len(columns) <= position < len(columns):
            raise InvalidArgumentError(f"{option} {position}: {path} has {len(columns)} "
                                       f"columns, so a position is in [{-len(columns)}, "
                                       f"{len(columns) - 1}].")
        chosen.append(columns[position])
    if len(set(chosen)) != len(chosen):
        raise InvalidArgumentError(f"{option} names a column twice.")
    return chosen


def _tokens(wanted: Any) -> list:
    return list(wanted) if isinstance(wanted, (list, tuple)) else str(wanted).split(",")


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _shown(name: str) -> str:
    return "unnamed" if not name.strip() else repr(name)


# ---- the columns a model was trained on -------------------------------------------------------

def columns_for(path: str | Path, feature_names: list[str] | None, n_features: int,
                target_names: list[str] | None = None, *, with_targets: bool = False,
                model: str = "the model") -> Table:
    """The rows of a CSV for a model trained on ``feature_names`` (or ``n_features`` unnamed
    ones): a file with a header gives them by name, in any order (its index, target and any
    other columns left out, said in ``notes``); a file without one must have exactly the
    feature columns (with ``with_targets``: then the target columns, as train read them)."""
    path = Path(path)
    names, cells = _rows(path, None)
    n_targets = len(target_names) if target_names else 1
    if names is None or feature_names is None:
        width = len(cells.names)
        if names is not None and names[0].strip().lower() in INDEX_NAMES and \
                width == n_features + 1 + with_targets * n_targets:
            columns, note = list(range(1, width)), [f"dropped the first column "
                                                    f"({_shown(names[0])}: pandas' index)"]
        else:
            columns, note = list(range(width)), []
        expected = n_features + (n_targets if with_targets else 0)
        if len(columns) != expected:
            what = f"{n_features} feature" + (f" and {n_targets} target" if with_targets else "")
            raise InvalidArgumentError(
                f"{path} has {len(columns)} columns, but {model} takes {what} columns"
                f"{' (in the order it was trained on)' if names is None else ''}; "
                f"{'give a file with a header naming the columns, or ' if names is None else ''}"
                f"give exactly those columns.")
        X = cells.numbers(columns[:n_features])
        y = cells.targets(columns[n_features:]) if with_targets else None
        return Table(X.astype(numpy.float32), y, None, None, note)
    lookup = {name: index for index, name in enumerate(names)}
    missing = [name for name in feature_names if name not in lookup]
    if missing:
        raise InvalidArgumentError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                                   f"{_quoted(missing)}, which {model} was trained on (it "
                                   f"takes {_quoted(feature_names)}, by name, in any order).")
    used = [lookup[name] for name in feature_names]
    y, target_columns = None, []
    if with_targets:
        absent = [name for name in target_names or [] if name not in lookup]
        if absent or not target_names:
            raise InvalidArgumentError(f"{path} has no target column "
                                       f"{_quoted(absent or ['?'])}: {model} was trained to "
                                       f"predict {_quoted(target_names or [])}.")
        target_columns = [lookup[name] for name in target_names]
        y = cells.targets(target_columns)
    notes = []
    others = [names[c] for c in range(len(names)) if c not in used + target_columns]
    if others:
        roles = {name: " (the model's target)" for name in target_names or []}
        if names[0].strip().lower() in INDEX_NAMES:
            roles[names[0]] = " (pandas' index)"
        shown = [f"{_shown(name)}{roles.get(name, '')}" for name in others]
        notes.append(f"left out the column{'s' if len(others) > 1 else ''} {', '.join(shown)}: "
                     f"not among the model's features")
    return Table(cells.numbers(used).astype(numpy.float32), y, list(feature_names),
                 target_names, notes)


# ---- labels and the task ------------------------------------------------------------------------

def infer_task(y: numpy.ndarray, requested: str | None = None, *, source: str = "the data",
               builtin: bool = False) -> Task:
    """The task ``y`` asks for, or the one ``requested`` ("classify"/"regress") when the
    targets allow it. Text labels are classes; whole numbers are classes when there are at
    most MOST_CLASSES distinct ones and at least two samples per class on average (so prices
    and years of birth are a regression's targets by default); one-hot rows are classes;
    anything else is a regression."""
    y = numpy.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim == 2:
        onehot = bool(numpy.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())
        if requested == "regress" or not onehot:
            if requested == "classify":
                raise InvalidArgumentError(
                    f"--task classify needs one column of labels or one-hot rows; {source} has "
                    f"{y.shape[1]} target columns that are not one-hot. Leave --task out for "
                    f"a regression of {y.shape[1]} targets.")
            why = "--task regress" if requested == "regress" else f"{y.shape[1]} target columns"
            return Task("regress", None, y.shape[1], why)
        return Task("classify", None, y.shape[1], f"one-hot labels in {y.shape[1]} columns")
    if y.dtype.kind in "USO":
        if requested == "regress":
            raise InvalidArgumentError(f"--task regress needs numbers; {source}'s targets are "
                                       f"text (e.g. {str(y[0])!r}). Leave --task out to "
                                       f"classify them.")
        classes = sorted(set(y.tolist()))
        return _classes(classes, len(y), source, f"{len(classes)} text labels")
    whole = bool(numpy.all(y == numpy.floor(y)))
    values = numpy.unique(y)
    if requested == "regress":
        return Task("regress", None, 1, "--task regress")
    if not whole:
        if requested == "classify":
            example = y[y != numpy.floor(y)][0]
            raise InvalidArgumentError(f"--task classify needs class labels (text or whole "
                                       f"numbers); {source}'s targets include {example:g}, not "
                                       f"a whole number. Leave --task out for a regression.")
        return Task("regress", None, 1, "targets that are not whole numbers")
    classes = [_plain(value) for value in values]
    if requested == "classify":
        return _classes(classes, len(y), source, f"--task classify, {len(classes)} labels")
    if builtin or (len(classes) <= MOST_CLASSES and len(y) >= 2 * len(classes)):
        words = "labels -1 and +1" if classes == [-1, 1] else \
            f"{len(classes)} distinct whole-number labels"
        return _classes(classes, len(y), source, f"{words}; --task regress for a regression")
    return Task("regress", None, 1,
                f"{len(classes)} distinct whole numbers for {len(y)} samples, too many for "
                f"classes (at most {MOST_CLASSES}, and two samples each on average); --task "
                f"classify makes them classes")


def _classes(classes: list, samples: int, source: str, why: str) -> Task:
    if len(classes) < 2:
        raise InvalidArgumentError(f"{source} has one label, {classes[0]!r}, in all {samples} "
                                   f"samples; a classifier needs at least two classes.")
    return Task("classify", classes, len(classes), why)


def _plain(value: Any) -> int | float:
    """A whole number as a Python int (JSON keeps it exactly), else a float."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def encode(y: numpy.ndarray, classes: list | None, *, source: str = "y") -> numpy.ndarray:
    """Labels as class indices into ``classes`` (the user's labels, sorted); unknown labels are
    refused, naming them. ``classes`` None: y is returned as it is (indices or one-hot)."""
    y = numpy.asarray(y)
    if classes is None:
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    text = y.dtype.kind in "USO"
    known = numpy.asarray(classes, dtype=numpy.str_ if text else None)
    if text != (known.dtype.kind in "USO"):
        if not text and bool(numpy.all((y >= 0) & (y < len(classes)) & (y == numpy.floor(y)))):
            return y.astype(numpy.int64)  # class indices for text classes, as Model.train took
        raise InvalidArgumentError(f"{source} holds {'text' if text else 'numbers'} but the "
                                   f"model's classes are {_listed(classes)}.")
    order = numpy.argsort(known, kind="stable")
    positions = numpy.searchsorted(known[order], y)
    positions = numpy.minimum(positions, len(known) - 1)
    found = known[order][positions] == y
    if not bool(found.all()):
        unknown = sorted({_plain(v) if not text else str(v) for v in y[~found].tolist()})
        raise InvalidArgumentError(f"{source} has label{'s' if len(unknown) > 1 else ''} "
                                   f"{_listed(unknown)} that the model does not know; its "
                                   f"classes are {_listed(classes)}.")
    return order[positions].astype(numpy.int64)


def decode(indices: Any, classes: list | None) -> numpy.ndarray:
    """Class indices as the user's labels (or the indices themselves without ``classes``)."""
    indices = numpy.asarray(indices)
    return indices if classes is None else numpy.asarray(classes)[indices]


def _listed(values: list, most: int = 10) -> str:
    more = f" and {len(values) - most} more" if len(values) > most else ""
    return ", ".join(repr(value) for value in values[:most]) + more
