"""dualcurate-difficulty: the pass-rate (difficulty) filter with adaptive sampling, and the
seeded RL-subset carve-out."""
