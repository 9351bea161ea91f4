"""Finding and framing a face, below both training and prediction: the detector (detector) and its
BlazeFace and Haar engines (backends), the training images' crop geometry (crop_geometry) and the
faces turned level by the eyes (align)."""
