"""Prediction: the Predictor (faces found and cut by audience.faces), drawing, webcam smoothing,
batch files."""
