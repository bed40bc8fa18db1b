"""The paper's Table 1 held as data, and the arithmetic that follows from it.

Each configuration is a list of five blocks; a block is a list of conv kernel
sizes paired with widths.  Every block ends in a 2x2/2 max-pool, every network
ends in FC-4096 -> FC-4096 -> FC-classes.  One builder (`keras_vgg.vgg.VGG`)
reads these tables, so a configuration is defined in exactly one place.
"""

from __future__ import annotations

import dataclasses

# (kernel size, filters) for each conv of each block, straight from Table 1.
_B1_1 = [(3, 64)]
_B1_2 = [(3, 64), (3, 64)]
_B2_1 = [(3, 128)]
_B2_2 = [(3, 128), (3, 128)]


def _block(width, n3, n1=0):
    return [(3, width)] * n3 + [(1, width)] * n1


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """One column of Table 1.

    Attributes:
        name: "A", "A-LRN", "B", "C", "D" or "E".
        blocks: five lists of `(kernel_size, filters)` pairs.
        lrn: whether local response normalisation follows the first conv.
        alias: the usual model name ("vgg16" for D).
    """

    name: str
    blocks: tuple
    lrn: bool
    alias: str

    @property
    def weight_layers(self):
        """Conv layers plus the three FC layers (the "11" of VGG11)."""
        return sum(len(b) for b in self.blocks) + 3

    @property
    def convs(self):
        """Every conv as `(block, index_in_block, kernel_size, filters)`."""
        return [
            (b + 1, i + 1, k, f)
            for b, block in enumerate(self.blocks)
            for i, (k, f) in enumerate(block)
        ]


def _config(name, blocks, alias, lrn=False):
    return VGGConfig(
        name=name,
        blocks=tuple(tuple(b) for b in blocks),
        lrn=lrn,
        alias=alias,
    )


CONFIGS = {
    "A": _config(
        "A", [_B1_1, _B2_1, _block(256, 2), _block(512, 2), _block(512, 2)],
        "vgg11",
    ),
    "A-LRN": _config(
        "A-LRN",
        [_B1_1, _B2_1, _block(256, 2), _block(512, 2), _block(512, 2)],
        "vgg11_lrn",
        lrn=True,
    ),
    "B": _config(
        "B", [_B1_2, _B2_2, _block(256, 2), _block(512, 2), _block(512, 2)],
        "vgg13",
    ),
    # C: the third conv of blocks 3-5 is a 1x1 linear projection (+ ReLU).
    "C": _config(
        "C",
        [_B1_2, _B2_2, _block(256, 2, 1), _block(512, 2, 1),
         _block(512, 2, 1)],
        "vgg16c",
    ),
    "D": _config(
        "D", [_B1_2, _B2_2, _block(256, 3), _block(512, 3), _block(512, 3)],
        "vgg16",
    ),
    "E": _config(
        "E", [_B1_2, _B2_2, _block(256, 4), _block(512, 4), _block(512, 4)],
        "vgg19",
    ),
}

FC_UNITS = 4096


def get_config(config: str | VGGConfig) -> VGGConfig:
    """Returns the `VGGConfig` named `config`, or a ValueError listing names."""
    if isinstance(config, VGGConfig):
        return config
    key = str(config).upper() if isinstance(config, str) else config
    if key not in CONFIGS:
        raise ValueError(
            f"Unknown `config`={config!r}. Expected one of "
            f"{sorted(CONFIGS)}."
        )
    return CONFIGS[key]


def count_params(config: str | VGGConfig, include_top: bool = True,
                 classes: int = 1000, input_size: int = 224,
                 channels: int = 3, batch_norm: bool = False) -> int:
    """Parameter count computed from Table 1 alone (no model is built).

    >>> count_params("D")
    138357544
    """
    cfg = get_config(config)
    total, cin = 0, channels
    for _, _, k, f in cfg.convs:
        total += k * k * cin * f + f
        if batch_norm:
            total += 4 * f
        cin = f
    if include_top:
        side = input_size // 32
        fin = side * side * cin
        total += fin * FC_UNITS + FC_UNITS
        total += FC_UNITS * FC_UNITS + FC_UNITS
        total += FC_UNITS * classes + classes
    return total


def count_macs(config: str | VGGConfig, height: int = 224,
               width: int | None = None, include_top: bool = True,
               classes: int = 1000, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass, from Table 1 alone.

    With `include_top` and an input larger than 224 the head is counted as
    the fully convolutional network the paper evaluates densely (one FC
    application per score-map position).

    >>> round(count_macs("D") / 1e9, 2)
    15.47
    """
    cfg = get_config(config)
    width = height if width is None else width
    h, w, cin, total = height, width, channels, 0
    for block in cfg.blocks:
        for k, f in block:
            total += h * w * k * k * cin * f
            cin = f
        h, w = h // 2, w // 2
    if include_top:
        positions = max(h - 6, 1) * max(w - 6, 1)
        fin = min(h, 7) * min(w, 7) * cin
        total += positions * (fin * FC_UNITS + FC_UNITS * FC_UNITS
                              + FC_UNITS * classes)
    return total
