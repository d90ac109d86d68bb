"""Classification tasks (binary, multi-class, multi-label, ordinal): the task (head size, loss, scores),
CORAL ordinal heads, imbalance losses, metrics (scikit-learn based, with bootstrap CIs) and the eval
loop that scores a split.
"""
