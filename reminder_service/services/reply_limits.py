"""How many replies one listing returns at most: the API's and the command line's bound.

A module of its own so the command line can declare its option without loading the store.
"""

MAX_LIST = 1000
