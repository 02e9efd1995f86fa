"""Media inspection: probing videos and images, and re-encoding them; untrusted bytes never decode in-process."""
