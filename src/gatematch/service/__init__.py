"""The gRPC service: protocol-free pieces (config, budgets, tracking, audit, metrics, security) and servicers."""
