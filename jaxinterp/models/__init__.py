"""Flax model definitions (`jaxinterp.models.vgg`)."""
