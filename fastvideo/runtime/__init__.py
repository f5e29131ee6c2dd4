"""Runtime: turns the engine into a service: VideoGenerator, events, media encoding, scheduling."""
