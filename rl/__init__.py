"""The learning side: ratings -> pairs -> DPO/KTO -> evaluation -> GGUF -> gate -> Ollama, one package per stage."""
