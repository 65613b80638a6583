"""dualcurate-trl."""
