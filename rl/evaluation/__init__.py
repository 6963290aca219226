"""The evaluation stage: eval sets, PyTorch and llama.cpp backends, metrics, the gate's score cache and scoring, served
up-rates, plots.
"""
