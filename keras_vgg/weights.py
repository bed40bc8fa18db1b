"""Weight sets, weight files and loading by layer name.

A weight set (`WeightSet`) is one published training run: where its file is,
its hash, the preprocessing it expects, its classes and its reported accuracy.
Files in three formats load into any keras_vgg model by layer name:

- legacy Keras HDF5 (`.h5`, the format keras.applications ships),
- Keras 3 `.weights.h5`,
- timm / torchvision `.safetensors` state dicts (converted on load).

Loading by name (not by position) lets a model built with `input_tensor`,
extra layers, preprocessing or BatchNormalization still take the weights of
the layers it shares with the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from keras_vgg import configs

if TYPE_CHECKING:  # for annotations only: Keras is imported where it is used
    import keras

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_HF = "https://huggingface.co/timm/{arch}.tv_in1k/resolve/main/model.safetensors"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One published set of weights for one configuration.

    Attributes:
        name: the value of `weights=` that selects it ("imagenet", "tv_in1k").
        config: Table 1 configuration ("D").
        batch_norm: whether it is for the conv-BN-ReLU variant.
        source: who trained it, where it was published.
        preprocessing: "caffe" or "torch" (see `keras_vgg.preprocessing`).
        classes: number of output classes of its head.
        top1, top5: reported ImageNet validation accuracy (%), single crop.
        origin, file_name, file_hash: the file with the FC head.
        origin_notop, file_name_notop, file_hash_notop: a file without the
            head, where one is published (else the head is skipped on load).
        hash_algorithm: "md5", "sha256" or "auto" (for keras.utils.get_file).
        eval_resize, eval_crop, eval_interpolation, eval_rounding: the
            evaluation transform its accuracy was measured with (shorter
            side, central crop, resampling, how the long side and the crop
            offset are rounded; `keras_vgg.eval_transform`).
    """

    name: str
    config: str
    batch_norm: bool
    source: str
    preprocessing: str
    classes: int
    top1: float
    top5: float
    origin: str
    file_name: str
    file_hash: str = None
    origin_notop: str = None
    file_name_notop: str = None
    file_hash_notop: str = None
    hash_algorithm: str = "auto"
    # torchvision's IMAGENET1K_V1 transforms, and keras.applications' use of
    # the Oxford weights: shorter side 256, central 224, bilinear.
    eval_resize: int = 256
    eval_crop: int = 224
    eval_interpolation: str = "bilinear"
    eval_rounding: str = "half_even"

    @property
    def format(self):
        safetensors = self.file_name.endswith(".safetensors")
        return "safetensors" if safetensors else "h5"


def _oxford(config, arch, top1, top5, hash_top, hash_notop):
    return WeightSet(
        name="imagenet",
        config=config,
        batch_norm=False,
        source=("Oxford VGG (Simonyan & Zisserman), Caffe weights as ported "
                "by keras.applications"),
        preprocessing="caffe",
        classes=1000,
        top1=top1,
        top5=top5,
        origin=f"{_KERAS_APPS}{arch}/{arch}_weights_tf_dim_ordering_tf_kernels.h5",
        file_name=f"{arch}_weights_tf_dim_ordering_tf_kernels.h5",
        file_hash=hash_top,
        origin_notop=(f"{_KERAS_APPS}{arch}/"
                      f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        file_name_notop=f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        file_hash_notop=hash_notop,
        hash_algorithm="md5",
    )


def _torchvision(config, arch, batch_norm, top1, top5):
    arch = arch + ("_bn" if batch_norm else "")
    return WeightSet(
        name="tv_in1k",
        config=config,
        batch_norm=batch_norm,
        source=(f"torchvision {arch} (IMAGENET1K_V1), as published by timm "
                f"as timm/{arch}.tv_in1k"),
        preprocessing="torch",
        classes=1000,
        top1=top1,
        top5=top5,
        origin=_HF.format(arch=arch),
        file_name=f"timm_{arch}.tv_in1k.safetensors",
        # torchvision's Resize truncates the long side, CenterCrop rounds.
        eval_rounding="torchvision",
    )


_WEIGHT_SETS = [
    # Same files and md5 hashes as keras.applications.VGG16/VGG19, so a file
    # already in the Keras cache (~/.keras/models) is reused.
    _oxford("D", "vgg16", 71.3, 90.1, "64373286793e3c8b2b4e3219cbf3544b",
            "6d6bbae143d832006294945121d1f1fc"),
    _oxford("E", "vgg19", 71.3, 90.0, "cbe5617147190e668d6c5d5026f83318",
            "253f8cb515780f3b799900260a226db6"),
    _torchvision("A", "vgg11", False, 69.02, 88.63),
    _torchvision("B", "vgg13", False, 69.93, 89.25),
    _torchvision("D", "vgg16", False, 71.59, 90.38),
    _torchvision("E", "vgg19", False, 72.38, 90.88),
    _torchvision("A", "vgg11", True, 70.37, 89.81),
    _torchvision("B", "vgg13", True, 71.59, 90.37),
    _torchvision("D", "vgg16", True, 73.36, 91.52),
    _torchvision("E", "vgg19", True, 74.22, 91.84),
]
WEIGHT_SETS = {(w.name, w.config, w.batch_norm): w for w in _WEIGHT_SETS}
WEIGHT_NAMES = tuple(sorted({w.name for w in _WEIGHT_SETS}))


def available_weights(config: str | configs.VGGConfig,
                      batch_norm: bool = False) -> list[str]:
    """Names of the weight sets published for `config` (and BN variant)."""
    cfg = configs.get_config(config)
    return [n for (n, c, bn) in WEIGHT_SETS
            if c == cfg.name and bn == batch_norm]


def get_weight_set(name: str, config: str | configs.VGGConfig,
                   batch_norm: bool = False) -> WeightSet:
    """Returns the `WeightSet` `name` for `config`, or a ValueError that says
    which weight sets exist for it."""
    cfg = configs.get_config(config)
    if name not in WEIGHT_NAMES:
        raise ValueError(
            f"Unknown weight set `weights`={name!r}. Expected None, a path to "
            f"a weight file, or one of {list(WEIGHT_NAMES)}."
        )
    key = (name, cfg.name, bool(batch_norm))
    if key not in WEIGHT_SETS:
        variant = f"config {cfg.name!r}" + (" with batch_norm=True"
                                            if batch_norm else "")
        have = available_weights(cfg.name, batch_norm)
        raise ValueError(
            f"No `weights`={name!r} were published for {variant}. Weight sets "
            f"for it: {have or 'none (use weights=None or a file path)'}."
        )
    return WEIGHT_SETS[key]


def is_weight_file(weights):
    return isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)


def preprocessing_for(weights):
    """The preprocessing mode ("caffe" or "torch") that goes with `weights`:
    a weight set name, a file path, or None (the paper's mean subtraction, as
    the Oxford weights)."""
    if weights is None:
        return "caffe"
    if isinstance(weights, WeightSet):
        return weights.preprocessing
    if weights in WEIGHT_NAMES:
        return next(w for w in _WEIGHT_SETS if w.name == weights).preprocessing
    if isinstance(weights, (str, os.PathLike)):
        if str(weights).endswith(".safetensors"):
            return "torch"
        if is_weight_file(weights):
            return "caffe"
    raise ValueError(
        f"Unknown `weights`={weights!r}: expected None, one of "
        f"{list(WEIGHT_NAMES)} or an existing weight file."
    )


def fetch(weight_set, include_top=True):
    """Downloads (once, then from the Keras cache) the file of a weight set
    with `keras.utils.get_file`, checking its hash where one is published."""
    import keras

    if not include_top and weight_set.origin_notop:
        origin, fname, fhash = (weight_set.origin_notop,
                                weight_set.file_name_notop,
                                weight_set.file_hash_notop)
    else:
        origin, fname, fhash = (weight_set.origin, weight_set.file_name,
                                weight_set.file_hash)
    return keras.utils.get_file(
        fname, origin, cache_subdir="models", file_hash=fhash,
        hash_algorithm=weight_set.hash_algorithm,
    )


# --------------------------------------------------------------------------
# Reading files into {layer_name: [arrays in layer.weights order]}.


def read_h5(path):
    """Reads a legacy Keras `.h5` or a Keras 3 `.weights.h5` file."""
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            out = {}
            for lname in root.attrs["layer_names"]:
                lname = lname.decode() if isinstance(lname, bytes) else lname
                group = root[lname]
                names = [n.decode() if isinstance(n, bytes) else n
                         for n in group.attrs["weight_names"]]
                if names:
                    out[lname] = [np.asarray(group[n]) for n in names]
            return out
        if "layers" in root:
            return _read_keras3_layers(root)
    raise ValueError(
        f"Weight file {path!r} is HDF5 but neither a legacy Keras weight file "
        "(no 'layer_names') nor a Keras 3 '.weights.h5' (no 'layers' group)."
    )


def _read_keras3_layers(group, prefix=""):
    """{"conv2d:3": arrays} of a Keras 3 `.weights.h5` group.  Keras keys
    layers by class and order ("conv2d", "conv2d_1", ...), not by layer
    name (see `_class_order_keys`); a nested model is a group with its own
    `layers`, numbered apart: "functional:0/conv2d:3"."""
    out = {}
    for key, child in group["layers"].items():
        base, _, count = key.rpartition("_")
        if not (base and count.isdigit()):
            base, count = key, "0"
        name = f"{prefix}{base}:{int(count)}"
        if "vars" in child and len(child["vars"]):
            out[name] = [np.asarray(child["vars"][str(i)])
                         for i in range(len(child["vars"]))]
        if "layers" in child:
            out.update(_read_keras3_layers(child, name + "/"))
    return out


def _snake_case(name):
    # The rule Keras 3 uses for the group names of a `.weights.h5` file.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _class_order_keys(layers, prefix=""):
    """{"conv2d:3": layer} for the 4th Conv2D of the model, and so on: how
    the layers of a Keras 3 `.weights.h5` are matched.  Loading such a file
    needs the same sequence of weighted layers of each class; the shapes are
    checked layer by layer.  A nested model's layers are numbered within
    it, under its own key ("sequential:0/conv2d:3"), as Keras saves them."""
    counts, keys = {}, {}
    for layer in layers:
        base = _snake_case(type(layer).__name__)
        key = f"{prefix}{base}:{counts.get(base, 0)}"
        counts[base] = counts.get(base, 0) + 1
        if getattr(layer, "layers", None):
            keys.update(_class_order_keys(layer.layers, key + "/"))
        else:
            keys[key] = layer
    return keys


def _conv_roots(keys):
    """{nested model key ("" for the top): its number of Conv2D entries}."""
    roots = {}
    for key in keys:
        root, _, own = key.rpartition("/")
        if own.startswith("conv2d:"):
            roots[root] = roots.get(root, 0) + 1
    return roots


def _under(keys, root):
    """The entries of `keys` inside nested model `root`, keyed within it."""
    if not root:
        return dict(keys)
    prefix = root + "/"
    return {k[len(prefix):]: v for k, v in keys.items()
            if k.startswith(prefix)}


def _nesting_error(what, roots):
    return ValueError(
        f"{what} nests {len(roots)} networks with convolutions "
        f"({', '.join(repr(r or 'top level') for r in sorted(roots))}), "
        "and it is not clear which the other side's network is. Load it "
        "into a model of the same structure with keras.Model.load_weights, "
        "or save the VGG sub-model's weights on their own "
        "(`model.get_layer(NAME).save_weights(...)`) and load that file.")


def _match_nesting(entries, layers, path):
    """`entries` and `layers` (Keras 3 class-order keys) keyed from the
    network that holds the convolutions on each side, so that the
    `.weights.h5` of a model nesting a VGG (`Sequential([vgg, Dense])`)
    loads into the VGG, and a VGG's file into a model nesting one.  Returns
    (entries, layers, file keys outside that network)."""
    file_roots, model_roots = _conv_roots(entries), _conv_roots(layers)
    if not file_roots or not model_roots or set(file_roots) == set(
            model_roots):
        return entries, layers, []
    for roots, what in ((file_roots, f"The weight file {path!r}"),
                        (model_roots, "The model")):
        if len(roots) > 1:
            raise _nesting_error(what, roots)
    (file_root,), (model_root,) = file_roots, model_roots
    inside = _under(entries, file_root)
    outside = [k for k in entries
               if file_root and not k.startswith(file_root + "/")]
    return inside, _under(layers, model_root), outside


def _torch_conv(w):
    # OIHW -> HWIO
    return np.transpose(w, (2, 3, 1, 0))


def _feature_index(key):
    return int(key.split(".")[1])


def convert_torch_state_dict(state, conv_layers, bn_layers, last_filters):
    """Maps a timm / torchvision VGG state dict onto keras_vgg layer names.

    `conv_layers` and `bn_layers` are the model's body layer names in network
    order; torch numbers its `features.N` modules in the same order.  The
    first FC layer is stored either as timm's 7x7 conv (`pre_logits.fc1`) or
    as torchvision's Linear over a CHW-flattened map (`classifier.0`): both
    are brought to Keras' HWC flattening.
    """
    convs = sorted((k for k in state if k.startswith("features.")
                    and k.endswith(".weight") and state[k].ndim == 4),
                   key=_feature_index)
    bns = sorted((k for k in state if k.startswith("features.")
                  and k.endswith(".running_mean")), key=_feature_index)
    if len(convs) != len(conv_layers) or len(bns) != len(bn_layers):
        raise ValueError(
            f"The state dict has {len(convs)} conv and {len(bns)} batch-norm "
            f"layers, the model {len(conv_layers)} and {len(bn_layers)}: the "
            "file is for another configuration or batch_norm setting."
        )
    out = {}
    for key, lname in zip(convs, conv_layers):
        prefix = key[: -len(".weight")]
        out[lname] = [_torch_conv(state[key]), state[prefix + ".bias"]]
    for key, lname in zip(bns, bn_layers):
        prefix = key[: -len(".running_mean")]
        out[lname] = [state[prefix + ".weight"], state[prefix + ".bias"],
                      state[prefix + ".running_mean"],
                      state[prefix + ".running_var"]]
    if "pre_logits.fc1.weight" in state:
        names = ("pre_logits.fc1", "pre_logits.fc2", "head.fc")
    elif "classifier.0.weight" in state:
        names = ("classifier.0", "classifier.3", "classifier.6")
    else:
        return out
    fc1 = state[names[0] + ".weight"]
    out_units = fc1.shape[0]
    if fc1.ndim == 2:
        side = int(round((fc1.shape[1] / last_filters) ** 0.5))
        fc1 = fc1.reshape(out_units, last_filters, side, side)
    out["fc1"] = [_torch_conv(fc1).reshape(-1, out_units),
                  state[names[0] + ".bias"]]
    fc2 = state[names[1] + ".weight"]
    out["fc2"] = [fc2.reshape(fc2.shape[0], -1).T, state[names[1] + ".bias"]]
    head = state[names[2] + ".weight"]
    out["predictions"] = [head.T, state[names[2] + ".bias"]]
    return out


def read_safetensors(path, model):
    import keras
    from safetensors.numpy import load_file

    state = load_file(path)
    body = [layer for layer in model.layers if layer.name.startswith("block")]
    conv_layers = [layer.name for layer in body
                   if isinstance(layer, keras.layers.Conv2D)]
    bn_layers = [layer.name for layer in body
                 if isinstance(layer, keras.layers.BatchNormalization)]
    last = next(layer for layer in reversed(body)
                if isinstance(layer, keras.layers.Conv2D))
    return convert_torch_state_dict(state, conv_layers, bn_layers,
                                    last.filters)


def read_weight_file(path: str, model: keras.Model) -> dict:
    """{layer key: arrays} of a weight file, by its extension; a ValueError
    naming the file and what is wrong with it for a missing, truncated or
    garbage file (h5py and safetensors name neither).  `model` is only
    read for a `.safetensors` file (its layer names)."""
    if path.endswith(".safetensors"):
        reader, kind = (lambda: read_safetensors(path, model)), "safetensors"
    elif path.endswith((".h5", ".hdf5", ".keras.h5")):
        reader, kind = (lambda: read_h5(path)), "HDF5"
    else:
        raise ValueError(
            f"Unknown weight file format: {path!r}. Expected '.h5' (legacy "
            "Keras), '.weights.h5' (Keras 3) or '.safetensors' (timm or "
            "torchvision)."
        )
    return _read_guarded(path, kind, reader)


def _read_guarded(path, kind, reader):
    """`reader()`, its errors turned into a ValueError naming the file."""
    if not os.path.isfile(path):
        raise ValueError(f"Weight file not found: {path!r}")
    try:
        return reader()
    except ValueError as e:
        if path in str(e):
            raise
        raise ValueError(f"Weight file {path!r}: {e}") from e
    except Exception as e:  # h5py's OSError/KeyError, SafetensorError, ...
        size = os.path.getsize(path)
        raise ValueError(
            f"Cannot read the weight file {path!r} ({size} bytes) as "
            f"{kind}: it is truncated, corrupt or not a {kind} weight file "
            f"({type(e).__name__}: {str(e).strip()[:300]})") from e


@dataclasses.dataclass(frozen=True)
class FileNetwork:
    """What a weight file's shapes say about the network it was saved from.

    Attributes:
        batch_norm: whether it holds BatchNormalization layers.
        width_multiplier: its widest convolution's (or, with the head, its
            FC layers') width over Table 1's.
        classes: the class count of its head; None for a file without one.
    """
    batch_norm: bool
    width_multiplier: float
    classes: int | None


def inspect_weight_file(path: str | os.PathLike) -> FileNetwork:
    """The BN setting, width multiplier and class count of the network a
    weight file (any format `load_weights` reads) was saved from, so that a
    model to load it into can be built without being told them.

    Raises:
        ValueError: the file cannot be read, or holds no convolution.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        state = _read_guarded(path, "safetensors", lambda: load_file(path))
        convs = sorted((k for k in state if k.startswith("features.")
                        and state[k].ndim == 4), key=_feature_index)
        # (out, in, ...) torch layouts: the width is the first axis.
        widths = [state[k].shape[0] for k in convs[-1:]]
        heads = [k for k in ("pre_logits.fc2.weight", "classifier.3.weight",
                             "head.fc.weight", "classifier.6.weight")
                 if k in state]
        fc = [state[k].shape[0] for k in heads]
        batch_norm = any(k.endswith(".running_mean") for k in state)
    else:
        entries = read_weight_file(path, model=None)
        roots = _conv_roots(entries)
        if len(roots) > 1:
            raise _nesting_error(f"The weight file {path!r}", roots)
        entries = _under(entries, next(iter(roots), ""))
        if all(":" in k for k in entries):
            convs = sorted((k for k in entries if k.startswith("conv2d:")),
                           key=lambda k: int(k.split(":")[1]))
            dense = sorted((k for k in entries if k.startswith("dense:")),
                           key=lambda k: int(k.split(":")[1]))
        else:
            convs = sorted(k for k in entries if _paper_width(k) and
                           k.startswith("block") and not k.endswith("_bn"))
            dense = [k for k in ("fc1", "fc2", "predictions")
                     if k in entries]
        widths = [entries[k][0].shape[-1] for k in convs[-1:]]
        fc = [entries[k][0].shape[-1] for k in dense[-2:]]
        batch_norm = any(_is_batch_norm_key(k) for k in entries)
    if not widths:
        raise ValueError(f"The weight file {path!r} holds no convolution: "
                         "it is not the file of a VGG.")
    # The last convolution of every configuration is 512 wide; FC-4096,
    # when there, tells the multiplier more finely.
    multiplier = (fc[0] / configs.FC_UNITS if len(fc) == 2
                  else widths[0] / configs.CONFIGS["A"].blocks[-1][-1][1])
    return FileNetwork(batch_norm=batch_norm, width_multiplier=multiplier,
                       classes=int(fc[1]) if len(fc) == 2 else None)


@dataclasses.dataclass
class LoadReport:
    """What `load_weights` did: layers loaded, model layers with weights the
    file did not have, and file entries the model has no layer for."""

    loaded: list
    missing: list
    unused: list
    # Layers of the file whose shapes differ from the model's, left as they
    # were (`skip_mismatch=True`): a new head of another class count.
    mismatched: list = dataclasses.field(default_factory=list)


def load_weights(model: keras.Model, path: str | os.PathLike,
                 skip_head: bool = False,
                 exclude: Iterable[str] = (),
                 skip_mismatch: bool = False) -> LoadReport:
    """Loads a weight file into `model` by layer name.

    Args:
        model: a Keras model (keras_vgg or any model with the same names).
        path: `.h5` (legacy Keras), `.weights.h5` (Keras 3) or `.safetensors`
            (timm / torchvision state dict).  A `.weights.h5` of a model
            nesting a VGG (`keras.Sequential([vgg, head])`) loads into a
            VGG, its outer layers reported in `unused`.
        skip_head: ignore `fc1`, `fc2` and `predictions` in the file.
        exclude: other layer names of the file to ignore.
        skip_mismatch: leave a layer whose shapes differ from the file's
            as it is (reported in `mismatched`) instead of raising, as
            Keras' `load_weights(skip_mismatch=True)`: fine-tuning on
            another number of classes keeps its new `predictions` layer.

    Returns:
        A `LoadReport`.  BatchNormalization layers of the file that the
        model has no layer for (a BN file into a plain network) are
        reported in `unused` and warned about.

    Raises:
        ValueError: the file is missing or of an unknown format, no layer of
            the model is in it, a layer's weights have another shape (the
            first such layer, both shapes and, for a convolution or FC
            layer, the width multiplier the file looks made with), or the
            file nests several networks.
    """
    path = os.fspath(path)
    entries = read_weight_file(path, model)
    flat = list(_flat_layers(model))
    outside = []
    if entries and all(":" in k for k in entries):
        layers = _class_order_keys(model.layers)
        entries, layers, outside = _match_nesting(entries, layers, path)
    else:
        layers = {layer.name: layer for layer in flat}
    if skip_head:
        entries = {k: v for k, v in entries.items()
                   if k not in ("fc1", "fc2", "predictions")
                   and not k.startswith("dense:")}
    entries = {k: v for k, v in entries.items() if k not in exclude}
    loaded, unused, mismatched = [], list(outside), []
    first_mismatch = None
    for lname, arrays in entries.items():
        layer = layers.get(lname)
        if layer is None:
            unused.append(lname)
            continue
        values, mismatch = _fitted(layer, lname, arrays, path)
        if mismatch is not None:
            if not skip_mismatch:
                raise ValueError(mismatch)
            first_mismatch = first_mismatch or mismatch
            mismatched.append(layer.name)
            continue
        layer.set_weights(values)
        loaded.append(layer.name)
    if not loaded:
        # Names that match with shapes that do not (a file of another
        # width) say so, not that nothing matched.
        raise ValueError(first_mismatch or (
            f"No layer of model {model.name!r} matches a layer name in "
            f"{path!r} (file layers: {sorted(entries)[:8]}...)."))
    missing = [layer.name for n, layer in layers.items()
               if layer.weights and n not in entries]
    _warn_batch_norm_ignored(unused, path)
    return LoadReport(loaded=loaded, missing=missing, unused=unused,
                      mismatched=mismatched)


def _fitted(layer, lname, arrays, path):
    """(the file's arrays shaped for `layer`, None), or (None, the message
    naming the first weight whose shape differs)."""
    targets = layer.weights
    if len(targets) != len(arrays):
        raise ValueError(
            f"Layer {lname!r} has {len(targets)} weights, the file "
            f"{path!r} has {len(arrays)} for it."
        )
    values = []
    for var, arr in zip(targets, arrays):
        shape = tuple(var.shape)
        if tuple(arr.shape) != shape:
            # A Dense kernel and the equivalent conv kernel of the fully
            # convolutional head hold the same numbers (HWC flattening).
            if arr.ndim != len(shape) and arr.size == np.prod(shape):
                arr = arr.reshape(shape)
            else:
                return None, (
                    f"Weight shape mismatch for layer {lname!r} "
                    f"({var.path}): model {shape}, file {path!r} "
                    f"{tuple(arr.shape)}."
                    + _width_hint(layer, shape, tuple(arr.shape)))
        values.append(arr)
    return values, None


def _paper_width(name):
    """Table 1's width of the layer named `name` (64 for block1_conv2,
    4096 for fc1), or None for the class head or another layer."""
    if name in ("fc1", "fc2"):
        return configs.FC_UNITS
    found = re.fullmatch(r"block(\d)_conv\d+(_bn)?", name)
    if found is None or not 1 <= int(found.group(1)) <= len(
            configs.CONFIGS["A"].blocks):
        return None
    # Every configuration widens its blocks alike: 64, 128, 256, 512, 512.
    return configs.CONFIGS["A"].blocks[int(found.group(1)) - 1][0][1]


def _width_hint(layer, model_shape, file_shape):
    """A sentence naming the width multiplier the file looks made with,
    when a layer of Table 1 differs in its output width; else ""."""
    paper = _paper_width(layer.name)
    if paper is None or not model_shape or len(model_shape) != len(
            file_shape) or model_shape[-1] == file_shape[-1]:
        return ""
    ratio = file_shape[-1] / model_shape[-1]
    return (f" The file's layer is {ratio:g} times as wide ({file_shape[-1]}"
            f" channels, the model's {model_shape[-1]}): it looks made with "
            f"width_multiplier={file_shape[-1] / paper:g} and the model with "
            f"{model_shape[-1] / paper:g}. Build the model with the file's "
            "width_multiplier.")


def _is_batch_norm_key(key):
    own = key.rpartition("/")[2]
    return own.startswith("batch_normalization:") or own.endswith("_bn")


def _warn_batch_norm_ignored(unused, path):
    ignored = [k for k in unused if _is_batch_norm_key(k)]
    if ignored:
        shown = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        warnings.warn(
            f"{len(ignored)} BatchNormalization layers of {path!r} ({shown}) "
            "were ignored: the model has no layer for them (batch_norm="
            "False?). Its convolutions take the file's kernels without the "
            "normalisation they were trained with; build the model with "
            "batch_norm=True to use them.", stacklevel=3)


def _flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        else:
            yield layer


def load_named(model, weight_set, include_top):
    """Fetches a weight set and loads it, requiring every weighted layer."""
    path = fetch(weight_set, include_top)
    report = load_weights(model, path, skip_head=not include_top)
    vgg_missing = [n for n in report.missing if n != "preprocessing"]
    if vgg_missing:
        raise ValueError(
            f"Weight set {weight_set.name!r} for config {weight_set.config!r} "
            f"did not provide weights for layers {vgg_missing}."
        )
    return report


def warn_missing(report, path):
    if report.missing:
        warnings.warn(
            f"Layers {report.missing} were not in {path!r} and keep their "
            "initial weights.", stacklevel=3)


def copy_layers(source, target, names=None, what="source"):
    """Copies the weights of the layers named `names` (default: every
    weighted layer of `target`) from model `source` to model `target`,
    skipping names `source` lacks.  Returns the names copied.

    Raises:
        ValueError: a layer's shapes differ, or nothing was copied (the
            message starts with `what`, the caller's name for `source`).
    """
    if names is None:
        names = [layer.name for layer in target.layers if layer.weights]
    copied = []
    for name in names:
        try:
            src = source.get_layer(name)
        except ValueError:
            continue
        dst = target.get_layer(name)
        values = src.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in dst.weights]:
            raise ValueError(
                f"{what}: layer {name!r} has shapes "
                f"{[v.shape for v in values]}, the model "
                f"{[tuple(w.shape) for w in dst.weights]}.")
        dst.set_weights(values)
        copied.append(name)
    if not copied:
        raise ValueError(f"{what} shares no layer with model "
                         f"{target.name!r}.")
    return copied
