"""dualcurate-vllm."""
