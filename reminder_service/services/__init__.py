"""Use cases, one verb each. Ports (store engine, channels, clock) are passed in."""
