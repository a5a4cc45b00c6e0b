"""blur_keras: Bidirectional Learned Update Rules (BLUR) for Keras/TensorFlow."""

from blur_keras import activations
from blur_keras.config import BlurConfig
from blur_keras.genome import Genome
from blur_keras.inner import forward_pass, inner_step, predict
from blur_keras.synapses import init_synapses

__version__ = "0.1.0"
from blur_keras.errors import NonFiniteError
from blur_keras.layers import BlurDense
from blur_keras.model import BlurModel
