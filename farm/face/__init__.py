"""face stages of the SyncFarm core."""
