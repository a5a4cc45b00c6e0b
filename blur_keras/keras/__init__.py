"""The Keras face: ``BlurDense`` layers and ``BlurModel``, which trains them by the rule."""
