"""Transfer learning: init modes (ImageNet, scratch, Mean-Var, partial transfusion), which parameters
train and how fast (frozen stages, linear probe, layer-wise lr decay; `modes`), and the optimizer and
schedule they wrap (`optimizer`).
"""
