"""Every Python example of the documentation runs as written, so that the
examples cannot drift from the code.  Pretrained weight sets would need a
download: `weights="imagenet"` and `weights="tv_in1k"` become
`weights=None`, and nothing else of the example changes.  No TensorFlow
here: the examples use keras_vgg alone, and run on every backend."""

import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "BUILD.md",
                ROOT / "REPRODUCTION.md"] + list((ROOT / "docs").glob(
                    "**/*.md")))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
DOWNLOADED = re.compile(r"""weights=(["'])(imagenet|tv_in1k)\1""")
# `print(x.shape)  # (1, 6, 10, 1000)`: a shown value is checked too.
SHOWN = re.compile(r"^print\((.*)\)\s+#\s*(\([\d, ]*\)|-?[\d.]+)\s*$", re.M)


def _examples():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(match.group(1),
                               id=f"{page.relative_to(ROOT)}:{line}")


EXAMPLES = list(_examples())


def offline(code):
    """The example with downloaded weight sets replaced by None, and each
    value it shows in a comment checked."""
    code = DOWNLOADED.sub("weights=None", code)
    return SHOWN.sub(lambda m: f"_shown({m.group(1)}, {m.group(2)!r})", code)


def _shown(value, expected):
    print(value)
    assert str(value) == expected, f"shows {value}, the comment {expected}"


def test_offline_changes_only_the_weights():
    code = ('VGG16(weights="imagenet")\n'
            "x = load_images(p, weights='tv_in1k')\n"
            "print(x.shape)  # (2, 3)\n"
            "print(x)  # a comment")
    assert offline(code) == ("VGG16(weights=None)\n"
                             "x = load_images(p, weights=None)\n"
                             "_shown(x.shape, '(2, 3)')\n"
                             "print(x)  # a comment")


def test_the_readme_has_examples():
    assert len([e for e in EXAMPLES if "README" in e.id]) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("code", EXAMPLES)
def test_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(offline(code), "<example>", "exec"),  # noqa: S102
             {"_shown": _shown})
    # Each example shows its results: a block that printed nothing did not
    # get to its end.
    assert out.getvalue().strip()
