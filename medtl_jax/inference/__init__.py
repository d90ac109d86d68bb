"""A finished run put to use: restore its model (`prediction_model`), predict images, folders, CSVs or
DICOM (`prediction`, `prediction_inputs`), Grad-CAM (`gradcam`), and score it on another dataset or site
(`cross_evaluate`).
"""
