"""Reading the face table: the Adience reader, splits, the demo set, image decoding, the image cache, transforms."""
