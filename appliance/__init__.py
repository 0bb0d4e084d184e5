"""model-appliance: serve INT8-optimized models over the Open Inference Protocol."""

__version__ = "0.1.0"
