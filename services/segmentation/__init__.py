"""Segmentation service: cells (nuclei + cell bodies), vessel contents, patch extraction."""
