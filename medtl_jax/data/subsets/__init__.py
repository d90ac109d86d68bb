"""Which part of a dataset a run trains on: nested stratified fractions (`fractions`), training sites
(`sites`), and both applied to a DataBundle (`training_subset`).
"""
