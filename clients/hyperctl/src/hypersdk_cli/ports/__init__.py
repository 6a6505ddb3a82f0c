"""The roles hyperctl needs from the outside world."""
