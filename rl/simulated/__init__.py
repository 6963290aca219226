"""SIMULATED stand-ins for the tests and the demo, imported by no production code: an Ollama server."""
