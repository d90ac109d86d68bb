"""Users' own files into a dataset: image and DICOM readers, CSV/folder manifests, patient-grouped splits,
leakage and label conflicts, the unreadable-file record, the summary, and `prepare_custom` (the
launch.prepare_data command's work).
"""
