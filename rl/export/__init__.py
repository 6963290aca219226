"""The export stage: a trained adapter -> merged -> GGUF -> quantized -> Modelfile -> verified, ending at a GGUF on disk."""
