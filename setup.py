"""Packages and data for setuptools (the rest of the metadata is in pyproject.toml).

`weights/` at the top level is the source of truth for the shipped checkpoints; wheels and
non-editable installs carry it as the data package `jaxinterp._weights`, which
`jaxinterp.weights.default_checkpoint` reads through importlib.resources.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["jaxinterp", "jaxinterp.*"]) + ["jaxinterp._weights"],
    package_dir={"jaxinterp._weights": "weights"},
    package_data={"jaxinterp.data": ["*.txt"],
                  "jaxinterp._weights": ["vgg-mini/**/*", "vit-mini/**/*", "lm-mini/**/*"]},
)
