"""Fetching hit images, validating and normalising them into tar parts."""
