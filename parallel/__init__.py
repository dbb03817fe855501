"""Sequence parallelism: one sampling run spread over several ranks (GPUs, or CPU processes in tests), each
holding a share of the image tokens; attention exchanges them (Ulysses, through yunchang's all-to-all)."""
