"""Training: TrainConfig, the epoch loop, one fold, cross-validation, metrics, calibration,
evaluation, run folders, the UI's background job."""
