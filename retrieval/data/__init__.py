"""Data: the competition layout's image listings and decoding, loaders, folds."""
