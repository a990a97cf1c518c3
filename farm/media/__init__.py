"""media stages of the SyncFarm core."""
