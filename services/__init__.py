"""LabSight's services: segmentation, features, classifier and the gateway."""
