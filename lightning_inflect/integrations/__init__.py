"""Front ends of the framework-free core for training loops other than Lightning's.

* :mod:`lightning_inflect.integrations.transformers`: the Hugging Face ``Trainer`` (and the trainers built on it,
  TRL's ``SFTTrainer``). Import it only when used.
"""
