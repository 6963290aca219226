"""The evaluation stage: eval sets, PyTorch and llama.cpp backends, metrics, the gate's score cache and scoring, paired
statistics (the gate's and the seed comparison's), served up-rates, plots.
"""
