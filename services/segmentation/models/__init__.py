"""Flow networks of the segmentation service: architectures and their place on the shared model stack."""
