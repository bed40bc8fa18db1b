"""Object boxes of a folder source, read from a box file beside its classes.

A "folder:DIR" source takes boxes from DIR/boxes.csv or DIR/boxes.json (both
at once is an error).  Coordinates are pixels, as in Pascal VOC, the ImageNet
localisation XML and the TF Object Detection API: x from the left, y from the
top, a box over a whole 80 x 40 image being xmin=0, ymin=0, xmax=80, ymax=40.

boxes.csv: a header row, then one row per box (several rows per image):

    filename,width,height,class,xmin,ymin,xmax,ymax
    circle/img_001.png,80,40,circle,10,5,30,25
    circle/img_001.png,80,40,circle,40,0,80,40
    img_002.jpg,,,square,3,4,20,22

    Required columns: filename, xmin, ymin, xmax, ymax.  Optional: width and
    height, the image's size in pixels (the TF Object Detection API's CSV
    layout); a row that leaves both empty, or a file without them, has its
    boxes normalised by the image's own size when it is read.  Other columns
    ("class", ...) are ignored: the label is the image's class folder.
    Column names are matched ignoring case and surrounding spaces.

boxes.json: either an object mapping a filename to its boxes,

    {"circle/img_001.png": [[10, 5, 30, 25], [40, 0, 80, 40]]}

each [xmin, ymin, xmax, ymax], or a list of objects with the CSV's columns
as keys (filename, xmin, ymin, xmax, ymax, optional width and height).

filename is the image's path relative to DIR ("circle/img_001.png"), or a
bare file name ("img_002.jpg") when exactly one image of the folder has it.
Images without any box keep no boxes.  A bad entry is a ValueError naming
the file, the entry (CSV: data row, counted from 1 after the header; JSON:
its index or key) and the fault.
"""

import csv
import json
import math
import os
import posixpath

BOX_FILES = ("boxes.csv", "boxes.json")
_COORDS = ("xmin", "ymin", "xmax", "ymax")


def find_box_file(directory):
    """The path of DIR's box file, or None when it has none."""
    found = [os.path.join(directory, name) for name in BOX_FILES
             if os.path.isfile(os.path.join(directory, name))]
    if len(found) > 1:
        raise ValueError(f"{directory!r} holds both {found[0]!r} and "
                         f"{found[1]!r}: keep one box file.")
    return found[0] if found else None


def read_boxes(path, directory, image_paths):
    """The boxes of the box file `path`, by image.

    Args:
        path: a boxes.csv or boxes.json.
        directory: the folder that filenames are relative to.
        image_paths: every image of the folder, as the source lists them.

    Returns:
        dict: an entry of `image_paths` -> list of (ymin, xmin, ymax, xmax,
        in_pixels) boxes; `in_pixels` is False for boxes already divided by
        the width and height given with them, True for boxes still in pixels
        (to be divided by the image's own size).  Images without boxes are
        absent.
    """
    entries = _json_entries(path) if path.endswith(".json") else (
        _csv_entries(path))
    resolve = _resolver(path, directory, image_paths)
    boxes = {}
    for where, fields in entries:
        image = resolve(fields.get("filename"), where)
        boxes.setdefault(image, []).append(_box(path, where, fields))
    return boxes


def _csv_entries(path):
    """(where, fields) per data row."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty; expected a header row "
                             f"({', '.join(('filename',) + _COORDS)}).")
        header = [name.strip().lower() for name in header]
        missing = [k for k in ("filename",) + _COORDS if k not in header]
        if missing:
            raise ValueError(
                f"{path}: header row: missing required column(s) "
                f"{', '.join(missing)}; it has {', '.join(header)}.")
        row_number = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            row_number += 1
            where = f"row {row_number} (line {reader.line_num})"
            # Short rows leave None, reported as a missing value.
            yield where, {k: (row[i].strip() if i < len(row) else None)
                          for i, k in enumerate(header)}


def _json_entries(path):
    """(where, fields) per box, `where` a JSON path such as [3] or
    ["circle/a.png"][1]."""
    with open(path, encoding="utf-8-sig") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from error
    if isinstance(data, dict):
        for name, boxes in data.items():
            key = f"[{json.dumps(name)}]"
            if not isinstance(boxes, list):
                raise ValueError(f"{path}: {key}: expected a list of "
                                 f"[xmin, ymin, xmax, ymax] boxes, got "
                                 f"{boxes!r}.")
            for i, box in enumerate(boxes):
                if not isinstance(box, list) or len(box) != 4:
                    raise ValueError(f"{path}: {key}[{i}]: expected "
                                     f"[xmin, ymin, xmax, ymax], got {box!r}.")
                yield f"{key}[{i}]", {"filename": name, **dict(zip(_COORDS,
                                                                   box))}
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ValueError(f"{path}: [{i}]: expected an object with "
                                 f"keys filename, {', '.join(_COORDS)}; got "
                                 f"{item!r}.")
            yield f"[{i}]", item
    else:
        raise ValueError(f"{path}: expected an object (filename -> boxes) "
                         f"or a list of box objects, got "
                         f"{type(data).__name__}.")


def _resolver(path, directory, image_paths):
    """filename -> the entry of `image_paths` it names."""
    by_relative = {}
    by_name = {}
    for image in image_paths:
        relative = os.path.relpath(image, directory).replace(os.sep, "/")
        by_relative[relative] = image
        by_name.setdefault(posixpath.basename(relative), []).append(relative)

    def resolve(filename, where):
        if not isinstance(filename, str) or not filename.strip():
            raise ValueError(f"{path}: {where}: missing filename.")
        name = posixpath.normpath(filename.strip())
        if name in by_relative:
            return by_relative[name]
        matches = by_name.get(name, []) if "/" not in name else []
        if len(matches) == 1:
            return by_relative[matches[0]]
        if matches:
            raise ValueError(
                f"{path}: {where}: the bare filename {filename!r} matches "
                f"{len(matches)} images ({', '.join(sorted(matches))}): give "
                "its path relative to the folder.")
        raise ValueError(
            f"{path}: {where}: {filename!r} is not an image of the folder "
            f"{directory!r} (filenames are relative to it, e.g. "
            f"{next(iter(sorted(by_relative)), 'class/image.jpg')!r}).")

    return resolve


def _box(path, where, fields):
    """(ymin, xmin, ymax, xmax, in_pixels) of one entry, checked."""
    def fail(problem):
        raise ValueError(f"{path}: {where}: {problem}.")

    def number(key):
        value = fields.get(key)
        if value is None:
            fail(f"missing {key}")
        if isinstance(value, bool) or not isinstance(value, (int, float,
                                                             str)):
            fail(f"{key}={value!r} is not a number")
        try:
            result = float(value)
        except ValueError:
            fail(f"{key}={value!r} is not a number")
        if not math.isfinite(result):
            fail(f"{key}={value!r} is not a finite number")
        return result

    xmin, ymin, xmax, ymax = (number(k) for k in _COORDS)
    for key, value in zip(_COORDS, (xmin, ymin, xmax, ymax)):
        if value < 0:
            fail(f"{key}={value:g} is negative")
    if xmax <= xmin:
        fail(f"xmax={xmax:g} is not greater than xmin={xmin:g}")
    if ymax <= ymin:
        fail(f"ymax={ymax:g} is not greater than ymin={ymin:g}")
    given = [k for k in ("width", "height")
             if fields.get(k) not in (None, "")]
    if not given:
        return ymin, xmin, ymax, xmax, True
    if len(given) == 1:
        fail(f"{given[0]} is given without "
             f"{'height' if given[0] == 'width' else 'width'}")
    width, height = number("width"), number("height")
    if width <= 0 or height <= 0:
        fail(f"width={width:g} and height={height:g} must be positive")
    if xmax > width:
        fail(f"xmax={xmax:g} is beyond width={width:g}")
    if ymax > height:
        fail(f"ymax={ymax:g} is beyond height={height:g}")
    return ymin / height, xmin / width, ymax / height, xmax / width, False
