"""Image search backends and the search stage that turns queries into hits."""
