"""agex-host-ray: the ``ray`` host, which runs an agent's whole loop on a Ray cluster."""
