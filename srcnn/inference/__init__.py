"""Running a net on whole images: devices, exact tiling, the batched CUDA path."""
