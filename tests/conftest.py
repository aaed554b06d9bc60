"""Shared test settings: TensorFlow backend unless a test asks for another, quiet logs."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# The shared helpers (`harness`, `reference`) live beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
