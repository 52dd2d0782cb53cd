"""Releasing `kubectl lapse` as a krew plugin (`make plugin`)."""
