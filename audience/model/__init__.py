"""The network (ARCHS allow-list), pretrained-weight loading, the checkpoint (save, load, list) and the
checkpoint served from the Hub."""
