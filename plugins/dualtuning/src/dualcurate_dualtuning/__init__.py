"""dualcurate-dualtuning."""
