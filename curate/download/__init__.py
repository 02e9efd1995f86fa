"""Download: fetch or read each planned sample, probe it, and write it into its shard (failures are rows)."""
