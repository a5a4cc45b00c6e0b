"""blur_keras: Bidirectional Learned Update Rules (BLUR) for Keras/TensorFlow.

Pure math: ``inner_step``, ``forward_pass``, ``predict``, ``init_synapses``
(and the modules ``forward``, ``feedback``, ``backward``, ``synapses``).
Keras: ``BlurDense``, ``BlurModel``, ``Genome``, ``BlurConfig``; ``pretrained_genomes()``
lists the genomes shipped with the package (``Genome.pretrained(name)``).
Subpackages: ``blur_keras.data`` (tasks), ``blur_keras.meta`` (meta-training),
``blur_keras.evaluation.plots``.
"""

from blur_keras.core import activations
from blur_keras.core.config import BlurConfig
from blur_keras.core.errors import NonFiniteError
from blur_keras.rules.genome import Genome
from blur_keras.core.step import forward_pass, inner_step, predict
from blur_keras.keras.layers import BlurDense
from blur_keras.keras.conv_layers import (BlurAveragePooling2D, BlurConv2D, BlurFlatten,
                                          BlurMaxPooling2D, BlurReshape)
from blur_keras.keras.model import BlurModel
from blur_keras.rules.pretrained import pretrained_names as pretrained_genomes
from blur_keras.core.synapses import init_synapses

__version__ = "0.1.0"
