"""Pyramid Non-Local Enhanced Networks (Zhu, Fang & Ma, IEEE TIP) for Keras 3."""

__version__ = "0.1.0"
