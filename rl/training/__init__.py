"""The training stage: a LoRA adapter trained with TRL's DPO or KTO (PEFT), prefix-sharing trainers, sampler, callbacks."""
