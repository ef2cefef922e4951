"""Wire formats: frames and the message types of the client and peer protocols."""
