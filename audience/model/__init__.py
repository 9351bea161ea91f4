"""The network (ARCHS allow-list), pretrained-weight loading, checkpoint save and load."""
