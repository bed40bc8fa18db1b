import json
import os
import re

import pytest

from pipelines import box_files

# The images of a folder as a source lists them; read_boxes never opens them.
ROOT = os.path.join("data", "shapes")
IMAGES = [os.path.join(ROOT, *name.split("/"))
          for name in ("circle/a.png", "circle/b.jpg", "square/a.png",
                       "square/sub/c.png")]
A, B, SQUARE_A, C = IMAGES


def _read(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return box_files.read_boxes(str(path), ROOT, IMAGES)


def test_csv_rows_in_pixels_with_and_without_the_image_size(tmp_path):
    boxes = _read(tmp_path, "boxes.csv", (
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "circle/a.png,80,40,circle,8,4,40,20\n"
        "circle/a.png,80,40,circle,0,0,80,40\n"
        "\n"  # blank lines are not rows
        "b.jpg,,,circle,2,5,10,25\n"
        "square/sub/c.png,200,100,square,50,10,150.5,90\n"))
    assert boxes == {
        A: [(0.1, 0.1, 0.5, 0.5, False), (0.0, 0.0, 1.0, 1.0, False)],
        B: [(5.0, 2.0, 25.0, 10.0, True)],  # (ymin, xmin, ...), pixels
        C: [(0.1, 0.25, 0.9, 0.7525, False)],
    }


def test_csv_without_size_columns_and_with_spaces_in_the_header(tmp_path):
    boxes = _read(tmp_path, "boxes.csv", (
        " FileName , xmin,ymin,xmax,ymax,class\n"
        "square/a.png,1,2,3,4,sq\n"))
    assert boxes == {SQUARE_A: [(2.0, 1.0, 4.0, 3.0, True)]}


def test_json_mapping_and_list_forms(tmp_path):
    mapping = _read(tmp_path, "boxes.json", {
        "circle/a.png": [[8, 4, 40, 20], [0, 0, 80, 40]],
        "c.png": [[1, 2, 3, 4]],
        "circle/b.jpg": []})
    assert mapping == {A: [(4.0, 8.0, 20.0, 40.0, True),
                           (0.0, 0.0, 40.0, 80.0, True)],
                       C: [(2.0, 1.0, 4.0, 3.0, True)]}
    listed = _read(tmp_path, "boxes.json", [
        {"filename": "circle/a.png", "xmin": 8, "ymin": 4, "xmax": 40,
         "ymax": 20, "width": 80, "height": 40, "class": "circle"},
        {"filename": "./circle/b.jpg", "xmin": 1, "ymin": 2, "xmax": 3,
         "ymax": 4, "width": None, "height": None}])
    assert listed == {A: [(0.1, 0.1, 0.5, 0.5, False)],
                      B: [(2.0, 1.0, 4.0, 3.0, True)]}


def test_find_box_file(tmp_path):
    assert box_files.find_box_file(str(tmp_path)) is None
    (tmp_path / "boxes.json").write_text("{}")
    assert box_files.find_box_file(str(tmp_path)) == str(
        tmp_path / "boxes.json")
    (tmp_path / "boxes.csv").write_text("filename,xmin,ymin,xmax,ymax\n")
    with pytest.raises(ValueError, match=r"boxes\.csv.*boxes\.json"):
        box_files.find_box_file(str(tmp_path))


_HEADER = "filename,width,height,xmin,ymin,xmax,ymax\n"
_GOOD = "circle/a.png,80,40,8,4,40,20\n"


@pytest.mark.parametrize("rows, where, problem", [
    ("circle/a.png,80,40,abc,4,40,20\n", "row 2 (line 3)",
     "xmin='abc' is not a number"),
    ("circle/a.png,80,40,8,4,40,nan\n", "row 2", "ymax='nan' is not a "
     "finite number"),
    ("circle/a.png,80,40,8,4,8,20\n", "row 2",
     "xmax=8 is not greater than xmin=8"),
    ("circle/a.png,80,40,8,20,40,4\n", "row 2",
     "ymax=4 is not greater than ymin=20"),
    ("circle/a.png,80,40,8,-1,40,20\n", "row 2", "ymin=-1 is negative"),
    ("circle/a.png,80,40,8,4,80.5,20\n", "row 2",
     "xmax=80.5 is beyond width=80"),
    ("circle/a.png,80,40,8,4,40,41\n", "row 2",
     "ymax=41 is beyond height=40"),
    ("circle/a.png,80,,8,4,40,20\n", "row 2",
     "width is given without height"),
    ("circle/a.png,0,40,8,4,40,20\n", "row 2", "must be positive"),
    ("circle/a.png,80,40,8,4\n", "row 2", "missing xmax"),
    ("circle/nope.png,80,40,8,4,40,20\n", "row 2",
     "'circle/nope.png' is not an image of the folder"),
    ("circle/a.txt,80,40,8,4,40,20\n", "row 2", "not an image"),
    ("a.png,80,40,8,4,40,20\n", "row 2",
     "the bare filename 'a.png' matches 2 images (circle/a.png, "
     "square/a.png)"),
    (",80,40,8,4,40,20\n", "row 2", "missing filename"),
    ("\n\ncircle/a.png,80,40,8,4,40,\n", "row 2 (line 5)",
     "ymax='' is not a number"),
])
def test_bad_csv_rows_name_the_file_and_the_row(tmp_path, rows, where,
                                                  problem):
    with pytest.raises(ValueError) as error:
        _read(tmp_path, "boxes.csv", _HEADER + _GOOD + rows)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "boxes.csv") + ": " + where)
    assert problem in message


def test_csv_needs_a_header_with_the_required_columns(tmp_path):
    with pytest.raises(ValueError, match=re.escape(
            "boxes.csv: header row: missing required column(s) ymin, "
            "ymax")):
        _read(tmp_path, "boxes.csv", "filename,xmin,xmax\na.png,1,2\n")
    # A file without a header: its first row is taken for one.
    with pytest.raises(ValueError, match="header row: missing required"):
        _read(tmp_path, "boxes.csv", _GOOD)
    with pytest.raises(ValueError, match=r"boxes\.csv: empty"):
        _read(tmp_path, "boxes.csv", "")


@pytest.mark.parametrize("data, where, problem", [
    ({"circle/a.png": [[1, 2, 3, 4], [5, 6, 7]]}, '["circle/a.png"][1]',
     "expected [xmin, ymin, xmax, ymax]"),
    ({"circle/a.png": [[1, 2, 3, 4], [5, 6, 5, 7]]}, '["circle/a.png"][1]',
     "xmax=5 is not greater than xmin=5"),
    ({"circle/a.png": [[1, 2, "x", 4]]}, '["circle/a.png"][0]',
     "xmax='x' is not a number"),
    ({"circle/a.png": [[1, 2, True, 4]]}, '["circle/a.png"][0]',
     "xmax=True is not a number"),
    ({"circle/a.png": [1, 2, 3, 4]}, '["circle/a.png"][0]',
     "expected [xmin, ymin, xmax, ymax]"),
    ({"circle/a.png": {"xmin": 1}}, '["circle/a.png"]',
     "expected a list"),
    ({"zz.png": [[1, 2, 3, 4]]}, '["zz.png"][0]', "is not an image"),
    ([{"filename": "circle/a.png", "xmin": 1, "ymin": 2, "xmax": 3,
       "ymax": 4},
      {"filename": "circle/a.png", "xmin": 1, "ymin": 2, "xmax": 3}],
     "[1]", "missing ymax"),
    ([{"filename": "circle/a.png", "xmin": 1, "ymin": 2, "xmax": 90,
       "ymax": 4, "width": 80, "height": 40}],
     "[0]", "xmax=90 is beyond width=80"),
    ([{"filename": "a.png", "xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4}],
     "[0]", "matches 2 images"),
    ([{"filename": "circle/a.png", "xmin": 1, "ymin": 2, "xmax": 3,
       "ymax": 4}, [1, 2, 3, 4]], "[1]", "expected an object"),
])
def test_bad_json_entries_name_the_file_and_the_entry(tmp_path, data, where,
                                                      problem):
    with pytest.raises(ValueError) as error:
        _read(tmp_path, "boxes.json", data)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "boxes.json") + ": " + where)
    assert problem in message


def test_bad_json_files(tmp_path):
    with pytest.raises(ValueError, match=r"boxes\.json: not valid JSON"):
        _read(tmp_path, "boxes.json", "{'single': 'quotes'}")
    with pytest.raises(ValueError, match=r"boxes\.json: expected an object"):
        _read(tmp_path, "boxes.json", "3")
