"""NetDissect-Lite's tally, transcribed to NumPy (CSAILVision/NetDissect-Lite, commit 2163454,
`feature_operation.py`: `FeatureOperator.tally_job` and the IoU lines of `FeatureOperator.tally`).

Transcribed: the per-image, per-unit loop and its arithmetic, line for line — the `max >
threshold` gate, the strict `mask > threshold`, `np.bincount` of every label map at the mask's
pixels with label 0 zeroed, `tally_cat = tally_bt . labelcat`, `tally_units_cat += |mask| *
(tally_cat > 0)`, `tally_labels` from every image, then `tally_units_cat . labelcat.T` and the
IoU. Left out: image-level ("scalar") labels, which `shapes` has none of, and the thread pool.
Given by the caller: the activations, the thresholds (Lite's approximate `QuantileVector`), the
resize (Lite's `scipy.misc.imresize(..., mode='F')`, gone from SciPy) and the label maps.
"""

from __future__ import annotations

import numpy as np

from jaxinterp.data import shapes_dataset as shapes_lib


def label_maps(d):
    """A `Shapes` batch's labels as Lite's pixel label groups, int `[N, 3, H, W]`: shape, colour
    and texture maps holding 1 + the concept's index in `jaxinterp.concepts.data.CONCEPTS`, 0
    where unlabelled (Lite's label 0), and `labelcat` `[1 + concepts, categories]`."""
    n_shape, n_color = len(shapes_lib.CLASSES), len(shapes_lib.COLOR_NAMES)
    n_texture = len(shapes_lib.TEXTURES)
    mask, labels = np.asarray(d.mask), np.asarray(d.labels)
    color, texture = np.asarray(d.color_map), np.asarray(d.texture_map)
    shape_map = np.where(mask, 1 + labels[:, None, None], 0)
    color_map = np.where(color >= 0, 1 + n_shape + color, 0)
    texture_map = np.where(texture >= 0, 1 + n_shape + n_color + texture, 0)
    pixels = np.stack([shape_map, color_map, texture_map], 1)
    labelcat = np.zeros((1 + n_shape + n_color + n_texture, 3))
    labelcat[1:1 + n_shape, 0] = 1
    labelcat[1 + n_shape:1 + n_shape + n_color, 1] = 1
    labelcat[1 + n_shape + n_color:, 2] = 1
    return pixels, labelcat


def tally(features, threshold, pixels, labelcat, imresize):
    """IoU `[units, labels]` (column 0 is Lite's background label).

    Args:
      features: activations `[N, units, h, w]` (Lite's layout).
      threshold: `[units]`.
      pixels: label groups `[N, groups, H, W]` (`label_maps`).
      labelcat: label -> category one-hot `[labels, categories]`.
      imresize: `imresize(feature_map, (sh, sw), img_index, unit_id)` -> `[sh, sw]`.
    """
    units = features.shape[1]
    labels, categories = labelcat.shape
    tally_both = np.zeros((units, labels), dtype=np.float64)
    tally_units = np.zeros(units, dtype=np.float64)
    tally_units_cat = np.zeros((units, categories), dtype=np.float64)
    tally_labels = np.zeros(labels, dtype=np.float64)
    for img_index in range(len(features)):
        group = pixels[img_index]  # Lite: np.concatenate of the categories' label groups
        sh, sw = group.shape[1:]
        tally_label = np.bincount(group.ravel())
        if len(tally_label) > 0:
            tally_label[0] = 0
        tally_labels[:len(tally_label)] += tally_label
        for unit_id in range(units):
            feature_map = features[img_index][unit_id]
            if feature_map.max() > threshold[unit_id]:
                mask = imresize(feature_map, (sh, sw), img_index, unit_id)
                indexes = np.argwhere(mask > threshold[unit_id])
                tally_units[unit_id] += len(indexes)
                tally_bt = np.bincount(group[:, indexes[:, 0], indexes[:, 1]].ravel())
                if len(tally_bt) > 0:
                    tally_bt[0] = 0
                tally_cat = np.dot(tally_bt[None, :], labelcat[:len(tally_bt), :])[0]
                tally_both[unit_id, :len(tally_bt)] += tally_bt
                tally_units_cat[unit_id] += len(indexes) * (tally_cat > 0)
    tally_units_cat = np.dot(tally_units_cat, labelcat.T)
    return tally_both / (tally_units_cat + tally_labels[np.newaxis, :] - tally_both + 1e-10)
