"""Classifiers taking images in [-1, 1]: the paper's torchvision models and the bundled Imagenette nets."""
