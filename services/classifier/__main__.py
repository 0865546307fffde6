"""Starts the classifier service: python -m services.classifier."""

from labsight.catalog import CLASSIFIER
from labsight.runtime.entry import run_service

if __name__ == "__main__":
    run_service(CLASSIFIER)
