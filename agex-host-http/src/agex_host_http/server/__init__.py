"""The agex server: runs whole agent loops for remote clients."""
