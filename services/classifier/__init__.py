"""Classifier service: organelle (subcellular localisation) classification and explanations."""
