"""How training spreads over processes: the process world (`world`), the strategy that holds the
model on each process (`strategies`: replicated, FSDP2, DeepSpeed ZeRO), and FSDP2 helpers (`fsdp`)."""
