"""The data stage: ratings -> preference pairs and KTO rows -> train/eval splits by scenario, with stats."""
