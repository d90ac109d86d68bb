"""What several test modules share (tests import it from here, never from another test module):

- paths: the repository root and the real data beside it;
- tiny_recipe: the trainer tests' tiny config and the first batches of its epoch 0;
- train_subprocess: `launch.train` in a subprocess, stopped by a signal at a given step;
- segmentation_folders: a generated image/mask folder for the segmentation tests;
- torch_reference: torchvision models with random weights for the porting tests;
- multiprocess_worker: one process of a multi-process run, run as a script by tests/runtime/test_multiprocess.py.

Nothing here imports JAX at module level (the multiprocess worker must set up its devices first).
"""
