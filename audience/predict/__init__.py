"""Prediction: face detection and its detector backends, the Predictor, drawing, webcam
smoothing, batch files and the prediction benchmark."""
