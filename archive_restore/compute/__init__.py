"""Where the networks compute and in what: the device (CPU or a CUDA GPU), the CPU's threads and half
precision measured at start-up, and the process's memory settings."""
