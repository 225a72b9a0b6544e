"""Fine-tuning torchvision classifiers (``trtinfer finetune``): data, recipe, loop, checkpoint card."""
