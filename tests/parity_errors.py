"""A result's error against a reference, relative to the reference's largest magnitude."""

import numpy as np


def rel_err(ours, theirs) -> float:
    """max |ours − theirs| / max |theirs| (float64; shapes must be equal, the reference not 0)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max()
    assert scale > 0
    return float(np.abs(ours - theirs).max() / scale)


def assert_close(ours, theirs, rel) -> float:
    """Asserts `rel_err(ours, theirs) <= rel`; returns the error."""
    err = rel_err(ours, theirs)
    assert err <= rel, f"max error {err:.2e} of the largest magnitude"
    return err
