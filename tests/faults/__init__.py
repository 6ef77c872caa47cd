"""Issue 5's promises under faults and attack: durable idempotency, mutual TLS, hostile input."""
