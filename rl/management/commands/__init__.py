"""train_dpo, evaluate_model, export_model, gate_model, online_learn, activate_model, rollback_model, pick_widget."""
