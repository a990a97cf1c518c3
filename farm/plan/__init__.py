"""Planning: scene cuts, shard plans and the job ledger."""
