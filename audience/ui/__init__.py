"""Gradio tabs of the app, one module per tab (gradio is imported only here and in app.py).

gradio calls matplotlib.use() around every event; while another thread is half-way through its first
import of matplotlib.pyplot, that call fails ("partially initialized module 'matplotlib.pyplot'") and
the event errors. mediapipe's vision package imports pyplot, and the first face detector is made in a
handler thread or in the training thread (measuring the crop geometry at the end of a run): a
/train_status poll then failed at random. So pyplot is imported here, once, before any event runs.
"""

import matplotlib.pyplot  # noqa: F401
