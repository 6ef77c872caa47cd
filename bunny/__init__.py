"""bunny: the gRPC client that finds relay by DNS, with every lookup retried and traced."""
