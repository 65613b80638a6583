"""dualcurate-hf."""
