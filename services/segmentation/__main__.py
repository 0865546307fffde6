"""Starts the segmentation service: python -m services.segmentation."""

from labsight.catalog import SEGMENTATION
from labsight.runtime.entry import run_service

if __name__ == "__main__":
    run_service(SEGMENTATION)
