"""Gradio tabs of the app, one module per tab (gradio is imported only here and in app.py)."""
