"""rsd_kernels placeholder"""
