"""Training CLIP models on harvested shards (imports torch; harvest code never imports this room)."""
