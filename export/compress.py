"""Smaller classifiers for `python -m export.tflite`: low-rank FC layers,
magnitude pruning and weight clustering, each optionally fine-tuned.

In this order, each step optional (a `Compression` names them):

1. Low rank (`fc_rank` or `fc_energy`): fc1 and fc2 become their truncated
   SVD, two Dense layers each (`keras_vgg.compress.low_rank_head`, on the
   Keras 3 model).
2. Pruning (`prune`, a sparsity): tensorflow-model-optimization's
   `prune_low_magnitude` on the tf_keras copy of the pixel model
   (`export.tf_keras_bridge`), for the hidden Dense layers (fc1, fc2 or
   their factors; with `prune_convs` the convolutions too).  With
   `finetune_data`: `finetune_steps` SGD steps on its training images while
   the sparsity rises polynomially from 0 to the target (reached two
   thirds of the way); without, one-shot: the smallest-magnitude weights
   of each layer are zeroed at once.
3. Clustering (`cluster`, a centroid count): tfmot's `cluster_weights` on
   the hidden Dense layers (k-means++ seeds, refined by a few Lloyd
   iterations on the weights), sparsity-preserving after pruning; with
   `finetune_data` `finetune_steps` more steps train the centroids.
4. With `finetune_data` and no pruning or clustering: `finetune_steps`
   steps on the low-rank model.

Fine-tuning is plain tf_keras `fit` (SGD, momentum 0.9) distilling the
uncompressed model: on central crops of the training split of
`finetune_data` (`export.calibration.training_batches`; its labels are not
used) the compressed model learns the original's probabilities
(cross-entropy), which is what agreement measures.  BatchNormalization
layers keep their statistics.  The compressed weights go back into a
Keras 3 copy of the model, which `export.tflite` then converts as any
classifier.

What shrinks the file: low rank removes weights; pruning and clustering do
not, on their own: int8 stores a zero or a centroid in a byte like any
other value.  They make the file compress: `compressed_size` is its gzip
size, what a phone downloads (`verification JSON: gzip_size_bytes`).
Float32 (`--quantize=none`) pruned files also use LiteRT's sparse weight
encoding (`EXPERIMENTAL_SPARSITY`), smaller in the file itself; LiteRT
2.3's XNNPack cannot run sparse int8 or dynamic-range fully connected
layers, so quantised files keep dense weights.
"""

import dataclasses
import gzip

import keras
import numpy as np

from export import calibration
from export import tf_keras_bridge
from keras_vgg import compress as low_rank
from keras_vgg import layers as vgg_layers

# Lloyd iterations refining tfmot's k-means++ seeds before clustering.
LLOYD_ITERATIONS = 10


def _int_at_least(value, minimum):
    """An int (not a bool) of at least `minimum`."""
    return (isinstance(value, (int, np.integer))
            and not isinstance(value, bool) and value >= minimum)


@dataclasses.dataclass(frozen=True)
class Compression:
    """What `compress` does (see the module doc); the default does
    nothing.

    Attributes:
        fc_rank: rank of fc1 and fc2 (truncated SVD).
        fc_energy: instead of `fc_rank`: the fraction of sum(s^2) kept.
        prune: target sparsity of the pruned layers, in (0, 1).
        prune_convs: prune the convolutions as well as the Dense layers.
        cluster: centroids per clustered layer, >= 2.
        finetune_data: a `pipelines.sources.load_source` spec, or None.
        finetune_steps: SGD steps per fine-tuned stage.
        finetune_lr: their learning rate.
        batch_size: fine-tuning batch size.
    """
    fc_rank: int | None = None
    fc_energy: float | None = None
    prune: float | None = None
    prune_convs: bool = False
    cluster: int | None = None
    finetune_data: str | None = None
    finetune_steps: int = 300
    finetune_lr: float = 1e-2
    batch_size: int = 16

    @property
    def low_rank(self):
        return self.fc_rank is not None or self.fc_energy is not None

    @property
    def active(self):
        """Whether anything is compressed."""
        return (self.low_rank or self.prune is not None
                or self.cluster is not None)

    def check(self):
        """Raises a ValueError naming the flag of a setting that cannot
        apply.  Returns self."""
        if self.fc_rank is not None and self.fc_energy is not None:
            raise ValueError("Give --fc_rank or --fc_energy, not both.")
        if self.fc_rank is not None and not _int_at_least(self.fc_rank, 1):
            raise ValueError(f"--fc_rank={self.fc_rank!r}: expected an int "
                             ">= 1.")
        if self.fc_energy is not None and not 0 < self.fc_energy <= 1:
            raise ValueError(f"--fc_energy={self.fc_energy!r}: expected a "
                             "fraction in (0, 1].")
        if self.prune is not None and not 0 < self.prune < 1:
            raise ValueError(f"--prune={self.prune!r}: expected a sparsity "
                             "in (0, 1), the fraction of weights zeroed.")
        if self.prune_convs and self.prune is None:
            raise ValueError("--prune_convs needs --prune=SPARSITY.")
        if self.cluster is not None and not _int_at_least(self.cluster, 2):
            raise ValueError(f"--cluster={self.cluster!r}: expected at least "
                             "2 centroids.")
        if self.finetune_data is not None and not self.active:
            raise ValueError("--finetune_data fine-tunes a compressed model: "
                             "give --fc_rank, --fc_energy, --prune or "
                             "--cluster with it.")
        if self.finetune_data is not None and (
                not isinstance(self.finetune_steps, (int, np.integer))
                or self.finetune_steps < 1):
            raise ValueError(f"--finetune_steps={self.finetune_steps!r}: "
                             "expected an int >= 1.")
        if self.finetune_data is not None and not self.finetune_lr > 0:
            raise ValueError(f"--finetune_lr={self.finetune_lr!r}: expected "
                             "a positive learning rate.")
        return self

    @property
    def uses_tfmot(self):
        return (self.prune is not None or self.cluster is not None
                or self.finetune_data is not None)


def check_model(source, compression):
    """Refuses a `compression` the classifier `source` cannot take (A-LRN
    through the tf_keras bridge)."""
    if not compression.uses_tfmot:
        return
    for layer in source.model.layers:
        if isinstance(layer, vgg_layers.LocalResponseNormalization):
            raise ValueError(
                "--prune, --cluster and --finetune_data work on the tf_keras "
                "copy of the model (export.tf_keras_bridge), which does not "
                f"mirror A-LRN's local response normalisation (layer "
                f"{layer.name!r}); --fc_rank / --fc_energy alone apply to "
                "A-LRN.")


def _is_kernel_layer(layer, model, convs):
    """A hidden Dense layer (or, with `convs`, a trainable Conv2D) of the
    tf_keras `model`.  The output layer is left whole: pruning a 5-class
    head by 90 % cost the demo classifier 12 points of agreement, against
    4 when only fc1 and fc2 are pruned; the fixed preprocessing conv is
    not trainable."""
    tf_keras = tf_keras_bridge.load_tf_keras()
    if (not layer.trainable or not layer.weights
            or layer is model.layers[-1]):
        return False
    if isinstance(layer, tf_keras.layers.Dense):
        return True
    return convs and isinstance(layer, tf_keras.layers.Conv2D)


def _wrap(model, wrap, convs=False):
    """`model` with `wrap(layer)` in place of each kernel layer (sharing
    the layers, and so the weights, of `model`)."""
    tf_keras = tf_keras_bridge.load_tf_keras()
    return tf_keras.models.clone_model(
        model, clone_function=lambda layer: (
            wrap(layer) if _is_kernel_layer(layer, model, convs)
            else layer))


def _distillation(teacher, dataset):
    """Endless (pixels, the teacher's probabilities) batches of the images
    of `dataset`: the compressed model learns to agree with the original,
    not to fit the labels of a few hundred central crops (which moved the
    demo classifier away from its own predictions and lost accuracy)."""
    return dataset.map(lambda pixels, _: (pixels,
                                          teacher(pixels, training=False)))


def _fit(model, batches, compression, callbacks=()):
    tf_keras = tf_keras_bridge.load_tf_keras()
    model.compile(
        optimizer=tf_keras.optimizers.SGD(compression.finetune_lr,
                                          momentum=0.9),
        loss=tf_keras.losses.CategoricalCrossentropy())
    model.fit(batches, steps_per_epoch=compression.finetune_steps,
              epochs=1, verbose=0, callbacks=list(callbacks))


def _pruning_schedule(tfmot, sparsity, steps):
    sparsity_lib = tfmot.sparsity.keras
    # Masks are recomputed every `frequency` steps; the target is reached
    # at `end`, a multiple of it within the steps run (0 .. steps - 1), so
    # that the last update hits it, and the remaining third of the steps
    # trains the survivors.
    frequency = max(1, steps // 10)
    end = (2 * (steps - 1) // 3) // frequency * frequency
    if end <= 0:  # one shot (at step 0), or too few steps to ramp up
        return sparsity_lib.ConstantSparsity(sparsity, begin_step=0,
                                             frequency=1)
    return sparsity_lib.PolynomialDecay(0.0, sparsity, begin_step=0,
                                        end_step=end, frequency=frequency)


def prune(model, sparsity, convs=False, batches=None, compression=None):
    """Magnitude pruning of the tf_keras `model` (see the module doc):
    fine-tuned on `batches` when given, else one-shot.  Returns the
    stripped (plain tf_keras) model."""
    tfmot = tf_keras_bridge.load_tfmot()
    steps = compression.finetune_steps if batches is not None else 0
    schedule = _pruning_schedule(tfmot, sparsity, steps)
    wrapped = _wrap(model, lambda layer: tfmot.sparsity.keras.
                    prune_low_magnitude(layer, pruning_schedule=schedule),
                    convs)
    wrappers = [layer for layer in wrapped.layers
                if hasattr(layer, "pruning_obj")]
    if steps:
        _fit(wrapped, batches, compression,
             [tfmot.sparsity.keras.UpdatePruningStep()])
    else:
        for layer in wrappers:
            layer.pruning_step.assign(0)
            layer.pruning_obj.conditional_mask_update()
    for layer in wrappers:
        # The masks on the weights after the last SGD step too.
        layer.pruning_obj.weight_mask_op()
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def _lloyd(weights, centroids, iterations=LLOYD_ITERATIONS):
    """1-D k-means from `centroids`: each iteration assigns every weight to
    its nearest centroid (by the midpoints of the sorted centroids) and
    moves each centroid to the mean of its weights."""
    w = np.asarray(weights, np.float64).ravel()
    c = np.sort(np.asarray(centroids, np.float64))
    for _ in range(iterations):
        index = np.searchsorted((c[1:] + c[:-1]) / 2, w)
        counts = np.bincount(index, minlength=len(c))
        sums = np.bincount(index, weights=w, minlength=len(c))
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    return c.astype(np.float32)


def cluster(model, clusters, batches=None, compression=None,
            preserve_sparsity=False):
    """Weight clustering of the Dense layers of the tf_keras `model` into
    `clusters` values each (see the module doc).  Returns the stripped
    (plain tf_keras) model."""
    tfmot = tf_keras_bridge.load_tfmot()
    clustering = tfmot.clustering.keras
    init = clustering.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer):
        # `preserve_sparsity` reaches tfmot's (experimental) sparsity-
        # preserving clustering through the public function's kwargs.
        return clustering.cluster_weights(
            layer, number_of_clusters=clusters,
            cluster_centroids_init=init,
            preserve_sparsity=preserve_sparsity,
            # A centroid's gradient is the mean of its weights' (tfmot's
            # default, the sum over up to millions of weights, throws the
            # centroids far off at any learning rate that suits the rest of
            # the network).  The enum is not exported; it is a str enum.
            cluster_gradient_aggregation="GradientAggregation.AVG")

    wrapped = _wrap(model, wrap)
    for layer in wrapped.layers:
        for name, centroids in getattr(layer, "cluster_centroids",
                                       {}).items():
            weights = layer.original_clusterable_weights[name].numpy()
            centroids.assign(_lloyd(weights, centroids.numpy()))
        if getattr(layer, "cluster_centroids", None):
            layer.update_clustered_weights_associations()
    if batches is not None:
        _fit(wrapped, batches, compression)
    return clustering.strip_clustering(wrapped)


def _freeze_body(tf_keras_model, convs=False):
    """Fine-tuning trains the Dense layers (and with `convs` the
    convolutions): the rest keeps its weights, and BatchNormalization its
    statistics (a tf_keras BN layer that is not trainable runs in
    inference mode).  Training every layer on a few hundred crops moved
    the demo classifier's predictions further than it recovered."""
    tf_keras = tf_keras_bridge.load_tf_keras()
    trained = (tf_keras.layers.Dense,) + ((tf_keras.layers.Conv2D,)
                                          if convs else ())
    for layer in tf_keras_model.layers:
        if layer.weights and not isinstance(layer, trained):
            layer.trainable = False


def _keras_copy(model):
    """A Keras 3 copy of `model` (same layers, names, weights)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def compress(source, compression, data_dir=None):
    """The classifier `source` (a `keras_vgg.runs.Run`) compressed as
    `compression` says (see the module doc).

    Returns:
        (run, info): a Run whose model is the compressed Keras 3 model
        (the source's is left as it was), and a dict for the verification
        JSON: fc_ranks, fc_energy, prune, prune_convs, measured_sparsity,
        cluster, max_unique_values, finetune_data, finetune_steps.
    """
    compression.check()
    check_model(source, compression)
    info = {}
    model = source.model
    if compression.low_rank:
        model = low_rank.low_rank_head(model, compression.fc_rank,
                                       compression.fc_energy)
        info.update(fc_ranks=low_rank.low_rank_ranks(model),
                    fc_energy=compression.fc_energy)
    run = dataclasses.replace(source, model=model, _fcns={})
    if compression.uses_tfmot:
        tf_keras_model = tf_keras_bridge.pixel_copy(run)
        batches = None
        if compression.finetune_data is not None:
            batches = _distillation(
                tf_keras_bridge.pixel_copy(source),
                calibration.training_batches(
                    compression.finetune_data, data_dir, source.test_scale,
                    source.crop, compression.batch_size))
            _freeze_body(tf_keras_model, compression.prune_convs)
            info.update(finetune_data=compression.finetune_data,
                        finetune_steps=compression.finetune_steps)
        if compression.prune is not None:
            tf_keras_model = prune(tf_keras_model, compression.prune,
                                   compression.prune_convs, batches,
                                   compression)
        if compression.cluster is not None:
            tf_keras_model = cluster(
                tf_keras_model, compression.cluster, batches, compression,
                preserve_sparsity=compression.prune is not None)
        if (batches is not None and compression.prune is None
                and compression.cluster is None):
            _fit(tf_keras_model, batches, compression)
        if model is source.model:
            model = _keras_copy(model)
        tf_keras_bridge.copy_back(tf_keras_model, model)
        run = dataclasses.replace(run, model=model)
    kernels = kernel_weights(model, convs=compression.prune_convs)
    if compression.prune is not None:
        info.update(prune=compression.prune,
                    prune_convs=compression.prune_convs,
                    measured_sparsity=float(
                        sum(int(np.sum(k == 0)) for k in kernels.values())
                        / sum(k.size for k in kernels.values())))
    if compression.cluster is not None:
        info.update(cluster=compression.cluster, max_unique_values=max(
            len(np.unique(k)) for k in kernel_weights(model).values()))
    return run, info


def kernel_weights(model, convs=False):
    """{name: kernel} of the hidden Dense layers of the Keras 3 `model`
    (and with `convs` its convolutions): the layers `compress` prunes /
    clusters."""
    kinds = (keras.layers.Dense,) + ((keras.layers.Conv2D,) if convs
                                     else ())
    return {layer.name: np.asarray(layer.kernel)
            for layer in model.layers[:-1] if isinstance(layer, kinds)}


def compressed_size(flatbuffer):
    """Bytes of the gzip-compressed file (level 9): what a download of it
    costs."""
    return len(gzip.compress(bytes(flatbuffer), compresslevel=9))
