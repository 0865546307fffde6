"""Starts the gateway API: python -m services.gateway (workers: python -m services.gateway.worker)."""

from labsight.catalog import GATEWAY
from labsight.runtime.entry import run_service

if __name__ == "__main__":
    run_service(GATEWAY)
