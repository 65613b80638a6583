"""dualcurate-verify."""
