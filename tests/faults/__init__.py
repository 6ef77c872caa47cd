"""Promises under faults and attack: no job lost, durable idempotency, mutual TLS, hostile input."""
