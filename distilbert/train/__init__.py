"""Make your own DistilBERT: data, masking, student initialisation, losses and the training loop."""
