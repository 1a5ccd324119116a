"""The user API: eager functions, the iterator API and the dataset handle."""
