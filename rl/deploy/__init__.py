"""The deploy stage: the gate, registration with the engine, the live version and its alias, and the one promote()."""
