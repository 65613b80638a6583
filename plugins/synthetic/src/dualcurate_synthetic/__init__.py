"""dualcurate-synthetic."""
