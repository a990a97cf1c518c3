"""Quality measures of SyncFarm outputs (face identity, untouched regions, temporal stability)."""
