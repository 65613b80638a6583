"""dualcurate-difficulty."""
