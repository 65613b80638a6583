"""dualcurate-hello: the smallest useful plugin, as a template for your own."""
