"""A remote host written only against agex's public API: the loop runs in a child process."""
