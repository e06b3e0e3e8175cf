"""Small CPU-sized laboratory: procedural data for tiny vision-language model experiments."""
