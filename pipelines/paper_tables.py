"""The paper's published numbers, as data: the one place they live.

Simonyan & Zisserman, ICLR 2015, as `shared/reference/vgg-paper.md` states
them (ILSVRC-2012 validation set, errors in percent).  Each table maps a row
key to its numbers; `pipelines.reproduce` builds the same keys for its rows
and prints these beside what it measured.  A row the reference does not
give a number for has no entry (printed as "n/a"), rather than a number
from memory.

Row keys:

- classification (Tables 3-7): "config/train S/test Q/protocol", e.g.
  "D/[256;512]/256,384,512/dense" (an ensemble's config "D+E");
- localisation (Tables 8, 9): "regression/fine-tuned layers/train S/test Q".

Values: classification (top-1, top-5) error; Table 8 the central-crop
localisation error with the ground-truth class; Table 9 the dense
protocol's top-5 localisation error.
"""

TITLES = {
    3: "ConvNet performance at a single test scale",
    4: "ConvNet performance at multiple test scales",
    5: "ConvNet evaluation techniques comparison (dense, multi-crop, both)",
    6: "Multiple ConvNet fusion results",
    7: "Comparison with the state of the art (this project's VGG rows)",
    8: "Localisation error for different modifications (central crop, "
       "ground-truth class)",
    9: "Localisation error for different testing protocols (dense, top-5)",
}

_JITTER = "[256;512]"

# (top-1, top-5) error %.
CLASSIFICATION = {
    # Table 3: dense evaluation at one scale, Q = S or Q = 384 for jittered S.
    3: {
        "A/256/256/dense": (29.6, 10.4),
        "A-LRN/256/256/dense": (29.7, 10.5),
        "B/256/256/dense": (28.7, 9.9),
        "C/256/256/dense": (28.1, 9.4),
        "C/384/384/dense": (28.1, 9.3),
        f"C/{_JITTER}/384/dense": (27.3, 8.8),
        "D/256/256/dense": (27.0, 8.8),
        "D/384/384/dense": (26.8, 8.7),
        f"D/{_JITTER}/384/dense": (25.6, 8.1),
        "E/256/256/dense": (27.3, 9.0),
        "E/384/384/dense": (26.9, 8.7),
        f"E/{_JITTER}/384/dense": (25.5, 8.0),
    },
    # Table 4: dense evaluation averaged over three scales.
    4: {
        f"D/{_JITTER}/256,384,512/dense": (24.8, 7.5),
        f"E/{_JITTER}/256,384,512/dense": (24.8, 7.5),
    },
    # Table 5: S in [256;512], Q in {256, 384, 512}.
    5: {
        f"D/{_JITTER}/256,384,512/dense": (24.8, 7.5),
        f"D/{_JITTER}/256,384,512/multicrop": (24.6, 7.5),
        f"D/{_JITTER}/256,384,512/combined": (24.4, 7.2),
        f"E/{_JITTER}/256,384,512/dense": (24.8, 7.5),
        f"E/{_JITTER}/256,384,512/multicrop": (24.6, 7.4),
        f"E/{_JITTER}/256,384,512/combined": (24.4, 7.1),
    },
    # Table 6: the ensemble of D and E (S in [256;512], Q in {256, 384, 512}).
    6: {
        f"D+E/{_JITTER}/256,384,512/combined": (23.7, 6.8),
    },
    # Table 7: the paper's own rows (1 net: E, multi-crop & dense).
    7: {
        f"E/{_JITTER}/256,384,512/combined": (24.4, 7.1),
        f"D+E/{_JITTER}/256,384,512/combined": (23.7, 6.8),
    },
}

# Localisation error % (one number per row).
LOCALIZATION = {
    # Table 8: central crop, ground-truth class, S = Q = 384.
    8: {
        "scr/fc/384/384": 36.4,
        "pcr/fc/384/384": 34.3,
        "pcr/all/384/384": 33.1,
    },
    # Table 9: dense protocol, top-5 localisation error.  The reference gives
    # only the fused models' error, and on the ILSVRC test set (not
    # validation).
    9: {
        "pcr/all/256+384/256,352,384": 25.3,
    },
}

NOTES = {
    9: "The published 25.3 % is the test-set error of the fused models "
       "(ILSVRC-2014); the measured numbers are on the validation split.",
}


def published(table, key):
    """The published numbers of `key` in `table`, or None."""
    numbers = CLASSIFICATION.get(table, LOCALIZATION.get(table, {}))
    return numbers.get(key)
