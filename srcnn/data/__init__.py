"""Images and training data: colour, the degradation, image I/O, patches, the training input, the patch store and its build."""
