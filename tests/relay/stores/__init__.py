"""Tests of relay.stores: the idempotency stores, memory, SQLite and Redis."""
