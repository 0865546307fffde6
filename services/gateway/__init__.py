"""Gateway: public job API, Redis-backed job queue, pipeline workers."""
