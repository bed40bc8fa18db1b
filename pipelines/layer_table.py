"""The per-layer table of a VGG: output shape, activation memory,
parameters, MACs and receptive field of every layer, with totals.

    python -m pipelines.layer_table --architecture=D --input_size=224
    vgg-layer-table --architecture=E --batch_norm --noinclude_top

The numbers come from `keras_vgg.layer_table` (notebook-callable); this
module only prints them.
"""

from absl import flags

import keras_vgg
from pipelines import entry
from pipelines.report import format_table


def format_rows(rows):
    """`keras_vgg.layer_table` rows as text, with each layer's share of
    the activation memory and parameters, and totals."""
    memory = sum(r.activation_bytes for r in rows[1:])
    params = sum(r.params for r in rows)
    macs = sum(r.macs for r in rows)
    body = [(r.name, "x".join(map(str, r.output_shape)),
             f"{r.activation_bytes / 2**20:.2f}",
             "-" if r.name == "input"
             else f"{100 * r.activation_bytes / memory:.1f}",
             f"{r.params:,}", f"{100 * r.params / max(params, 1):.1f}",
             f"{r.macs / 1e6:,.1f}",
             "all" if r.receptive_field is None else r.receptive_field,
             "-" if r.stride is None else r.stride) for r in rows]
    body.append(("total", "", f"{memory / 2**20:.2f}", "100.0",
                 f"{params:,}", "100.0", f"{macs / 1e6:,.1f}", "", ""))
    return format_table(["layer", "output", "activations MiB", "% act",
                         "parameters", "% params", "MMACs",
                         "receptive field", "stride"], body)


def format_blocks(rows):
    """The same table summed per block (the convolutions and pool of each
    block, then each FC layer): a dozen lines for `make demo`."""
    memory = sum(r.activation_bytes for r in rows[1:])
    params = sum(r.params for r in rows)
    groups = {}
    for r in rows[1:]:
        if r.params == 0 and not r.name.startswith("block"):
            continue  # flatten, dropout: no parameters, a copy of the input
        key = r.name.split("_")[0] if r.name.startswith("block") else r.name
        mem, par, mac, shape = groups.get(key, (0, 0, 0, None))
        groups[key] = (mem + r.activation_bytes, par + r.params,
                       mac + r.macs, r.output_shape)
    body = [(key, "x".join(map(str, shape)), f"{mem / 2**20:.2f}",
             f"{100 * mem / memory:.1f}", f"{par:,}",
             f"{100 * par / params:.1f}", f"{mac / 1e6:,.1f}")
            for key, (mem, par, mac, shape) in groups.items()]
    return format_table(["layers", "output", "activations MiB", "% act",
                         "parameters", "% params", "MMACs"], body)


def define_flags(flag_values=flags.FLAGS):
    flags.DEFINE_enum("architecture", "D", list(keras_vgg.CONFIGS),
                      "Table 1 configuration.", flag_values=flag_values)
    flags.DEFINE_integer("input_size", 224, "Input side in pixels.",
                         flag_values=flag_values)
    flags.DEFINE_bool("batch_norm", False, "The BN variant.",
                      flag_values=flag_values)
    flags.DEFINE_bool("include_top", True, "With the FC head (fixed input "
                      "size); --noinclude_top: the conv body.",
                      flag_values=flag_values)


def main(argv):
    del argv
    fv = flags.FLAGS
    size = fv.input_size
    rows = keras_vgg.layer_table(fv.architecture, (size, size, 3),
                                 batch_norm=fv.batch_norm,
                                 include_top=fv.include_top)
    print(f"VGG {fv.architecture}{' BN' if fv.batch_norm else ''} at "
          f"{size}x{size}, one image, float32 activations:")
    print(format_rows(rows))


def run():
    """The command line; also the `vgg-layer-table` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
