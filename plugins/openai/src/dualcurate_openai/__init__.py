"""dualcurate-openai."""
