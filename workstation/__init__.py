"""The investigators' online workstation: the signed transfer client (`amanat transfer status,
pull, ack, push`). It holds a transfer credential that opens nothing, and imports neither the
server's storage nor stem."""
