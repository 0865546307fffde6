"""Starts the features service: python -m services.features."""

from labsight.catalog import FEATURES
from labsight.runtime.entry import run_service

if __name__ == "__main__":
    run_service(FEATURES)
