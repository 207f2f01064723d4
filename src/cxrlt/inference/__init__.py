"""Using a trained model: loading saved models, batch prediction, test-time augmentation."""
