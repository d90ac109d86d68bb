"""Segmentation tasks: the task (per-pixel losses, probabilities), Dice/IoU/HD95 inside the field of
view, and sliding-window inference over whole images.
"""
